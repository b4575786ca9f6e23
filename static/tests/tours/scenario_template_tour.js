/** @odoo-module **/
import { registry } from "@web/core/registry";

// From the Scenarios kanban to a new abandoned-cart scenario, then its statistics.
registry.category("web_tour.tours").add("marketing_scenario_template_tour", {
    steps: () => [
        {
            content: "Open the templates from the Scenarios kanban",
            trigger: ".o_kanban_view .o_control_panel button[name=action_open_templates]",
            run: "click",
        },
        {
            content: "Use the abandoned cart template",
            trigger: ".o_mea_template_abandoned_cart button[name=action_create_scenario]",
            run: "click",
        },
        {
            content: "The new scenario opens, a draft named after the template",
            trigger: ".o_form_view .o_field_widget[name=name] input:value(Abandoned cart)",
        },
        {
            content: "It has an objective already: the form does not ask for one",
            trigger: ".o_form_view:not(:has(.o_mea_objective_prompt:visible)) button[name=action_start]",
        },
        {
            content: "Start it as it is",
            trigger: ".o_form_view button[name=action_start]",
            run: "click",
        },
        {
            content: "It runs",
            trigger: ".o_statusbar_status .o_arrow_button_current:contains(Running)",
        },
        {
            content: "Open the statistics",
            trigger: ".o_notebook .nav-link:contains(Statistics)",
            run: "click",
        },
        {
            content: "The funnel lists the path",
            trigger: ".o_mea_funnel .o_mea_funnel_row:contains(Cart reminder)",
        },
        {
            content: "Entries over time",
            trigger: ".o_form_view button[name=action_view_participants_graph]",
            run: "click",
        },
        {
            content: "The graph of entries opens",
            trigger: ".o_graph_view",
        },
    ],
});
