/** @odoo-module **/
import { registry } from "@web/core/registry";

const status = (label) => `.o_statusbar_status .o_arrow_button_current:contains(${label})`;

registry.category("web_tour.tours").add("marketing_scenario_tour", {
    steps: () => [
        {
            content: "Open the scenario from its card",
            trigger: ".o_kanban_view .o_kanban_record:contains(Tour scenario) .o_mea_scenario_name",
            run: "click",
        },
        {
            content: "It is a draft",
            trigger: status("Draft"),
        },
        {
            content: "Start it",
            trigger: ".o_form_view button[name=action_start]",
            run: "click",
        },
        {
            content: "It runs",
            trigger: status("Running"),
        },
        {
            content: "Pause it",
            trigger: ".o_form_view button[name=action_pause]",
            run: "click",
        },
        {
            content: "It is paused and can be resumed",
            trigger: `${status("Paused")}`,
        },
        {
            trigger: ".o_form_view button[name=action_resume]",
        },
        {
            content: "Open the test run",
            trigger: ".o_form_view button[name=action_test_run]",
            run: "click",
        },
        {
            content: "Choose the contact",
            trigger: ".modal .o_field_widget[name=partner_id] input",
            run: "edit Alice Shopper",
        },
        {
            trigger: ".o-autocomplete--dropdown-item:contains(Alice Shopper)",
            run: "click",
        },
        {
            content: "Run the scenario for her",
            trigger: ".modal button[name=action_run]",
            run: "click",
        },
        {
            content: "Each step shows its result",
            trigger: ".modal .o_field_widget[name=step_ids] .o_data_row:contains(VIP)",
        },
        {
            content: "Close the test run",
            trigger: ".modal .modal-footer button:contains(Close)",
            run: "click",
        },
        {
            content: "Back on the paused scenario",
            trigger: `body:not(:has(.modal)) ${status("Paused")}`,
        },
    ],
});
