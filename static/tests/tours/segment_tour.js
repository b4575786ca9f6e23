/** @odoo-module **/
import { registry } from "@web/core/registry";

registry.category("web_tour.tours").add("marketing_segment_tour", {
    steps: () => [
        {
            content: "Create a segment",
            trigger: ".o_list_button_add",
            run: "click",
        },
        {
            trigger: ".o_form_view .o_field_widget[name=name] input",
            run: "edit Tour big buyers",
        },
        {
            content: "Add an event rule",
            trigger: ".o_field_widget[name=rule_ids] .o_field_x2many_list_row_add a",
            run: "click",
        },
        {
            content: "Only segmentation types are offered: pick the purchase",
            trigger: ".o_field_widget[name=rule_ids] .o_data_row .o_field_widget[name=event_type_id] input",
            run: "edit Tour purchase",
        },
        {
            trigger: ".o-autocomplete--dropdown-item:contains(Tour purchase)",
            run: "click",
        },
        {
            trigger: ".o_field_widget[name=rule_ids] .o_data_row .o_field_widget[name=params_filter] input",
            run: "edit total > 100",
        },
        {
            content: "Save the segment",
            trigger: ".o_form_view .o_form_button_save",
            run: "click",
        },
        {
            content: "Its members are counted at once: the one big buyer",
            trigger: ".o_form_view button[name=action_view_members] .o_stat_value:contains(1)",
        },
        {
            content: "Go to the scenarios",
            trigger: ".o_menu_sections [data-menu-xmlid='marketing_event_automation.menu_marketing_scenario']",
            run: "click",
        },
        {
            content: "Open the draft scenario",
            trigger: ".o_kanban_view .o_kanban_record:contains(Segment tour scenario) .o_mea_scenario_name",
            run: "click",
        },
        {
            content: "It starts when a contact enters a segment",
            trigger: ".o_form_view .o_field_widget[name=trigger_type] label:contains(Enters a segment)",
            run: "click",
        },
        {
            trigger: ".o_form_view .o_field_widget[name=trigger_segment_id] input",
            run: "edit Tour big",
        },
        {
            trigger: ".o-autocomplete--dropdown-item:contains(Tour big buyers)",
            run: "click",
        },
        {
            content: "and ends when the contact leaves it",
            trigger: ".o_form_view .o_field_widget[name=exit_on_segment_left] input",
            run: "click",
        },
        {
            content: "Start it",
            trigger: ".o_form_view button[name=action_start]",
            run: "click",
        },
        {
            content: "It runs",
            trigger: ".o_statusbar_status .o_arrow_button_current:contains(Running)",
        },
    ],
});
