/** @odoo-module **/
import { registry } from "@web/core/registry";

registry.category("web_tour.tours").add("marketing_system_automation_tour", {
    steps: () => [
        {
            content: "Create a system automation",
            trigger: ".o_list_button_add",
            run: "click",
        },
        {
            content: "Name it",
            trigger: ".o_field_widget[name=name] input",
            run: "edit Tour weekly export",
        },
        {
            content: "Search the system event",
            trigger: ".o_field_widget[name=event_type_id] input",
            run: "edit Tour",
        },
        {
            content: "Only system (S) types are offered: the contact type is not, the system one is",
            trigger:
                ".o-autocomplete--dropdown-menu:not(:has(.o-autocomplete--dropdown-item:contains(Tour contact type))) .o-autocomplete--dropdown-item:contains(Tour system type)",
            run: "click",
        },
        {
            content: "Add a job",
            trigger: ".o_field_widget[name=job_ids] .o_field_x2many_list_row_add a",
            run: "click",
        },
        {
            content: "Choose Export data",
            trigger: ".modal .o_field_widget[name=job_type] .o_radio_input[data-value=export]",
            run: "click",
        },
        {
            content: "The export settings are shown, the mailing ones are not",
            trigger: ".modal:not(:has(.o_field_widget[name=mailing_template_id])) .o_field_widget[name=export_kind]",
        },
        {
            content: "Outside addresses are an administrator's setting: the marketer sends to a user",
            trigger: ".modal:not(:has(.o_field_widget[name=recipient_emails])) .o_field_widget[name=recipient_user_ids] input",
            run: "edit mea_marketer",
        },
        {
            content: "Choose the marketer himself",
            trigger: ".o-autocomplete--dropdown-item:contains(mea_marketer)",
            run: "click",
        },
        {
            content: "Close the job",
            trigger: ".modal .o_form_button_save",
            run: "click",
        },
        {
            content: "The job line summarizes its settings",
            trigger: ".o_field_widget[name=job_ids] .o_data_row:contains(Raw events):contains(mea_marketer)",
        },
        {
            content: "Save the automation",
            trigger: ".o_form_view .o_form_button_save",
            run: "click",
        },
        {
            content: "Saved",
            trigger: ".o_form_view .o_form_saved",
        },
    ],
});
