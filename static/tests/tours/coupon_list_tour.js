/** @odoo-module **/
import { registry } from "@web/core/registry";

const card = (text) => `.o_mea_flow .o_mea_flow_card:contains(${text})`;

registry.category("web_tour.tours").add("marketing_coupon_list_tour", {
    steps: () => [
        {
            content: "Create a coupon list",
            trigger: ".o_list_button_add",
            run: "click",
        },
        {
            trigger: ".o_form_view .o_field_widget[name=name] input",
            run: "edit Tour coupons",
        },
        {
            trigger: ".o_form_view .o_field_widget[name=value_description] input",
            run: "edit 10% off",
        },
        {
            content: "Save it",
            trigger: ".o_form_view .o_form_button_save",
            run: "click",
        },
        {
            content: "Import codes",
            trigger: ".o_form_view button[name=action_import]",
            run: "click",
        },
        {
            content: "Paste two good codes and a bad one",
            trigger: ".modal .o_field_widget[name=pasted_codes] textarea",
            async run(helpers) {
                // A string action cannot hold line breaks: one code per line.
                await helpers.edit("TOUR-1\nTOUR-2\nBAD CODE");
            },
        },
        {
            trigger: ".modal button[name=action_import]",
            run: "click",
        },
        {
            content: "The good codes are imported, the bad one rejected with its reason",
            trigger: ".modal .o_field_widget[name=imported_count]:contains(2)",
        },
        {
            trigger: ".modal .o_field_widget[name=rejected_rows]:contains(pasted line 3: only letters, digits)",
        },
        {
            trigger: ".modal .modal-footer button:contains(Close)",
            run: "click",
        },
        {
            content: "Go to the scenarios",
            trigger: `body:not(:has(.modal)) .o_menu_sections [data-menu-xmlid="marketing_event_automation.menu_marketing_scenario"]`,
            run: "click",
        },
        {
            trigger: ".o_kanban_view .o_kanban_record:contains(Coupon tour) .o_mea_scenario_name",
            run: "click",
        },
        {
            trigger: ".o_notebook .nav-link:contains(Flow)",
            run: "click",
        },
        {
            content: "Add the first node",
            trigger: ".o_mea_flow .o_mea_flow_add[data-parent-id='0']",
            run: "click",
        },
        {
            content: "Give a coupon",
            trigger: ".modal .o_field_widget[name=node_type] select",
            run: 'select "coupon"',
        },
        {
            trigger: ".modal .o_field_widget[name=name] input",
            run: "edit Give the code",
        },
        {
            content: "From the list just imported",
            trigger: ".modal .o_field_widget[name=coupon_list_id] input",
            run: "edit Tour coupons",
        },
        {
            trigger: ".o-autocomplete--dropdown-item:contains(Tour coupons)",
            run: "click",
        },
        {
            trigger: ".modal .o_form_button_save",
            run: "click",
        },
        {
            content: "The card names the list and its codes left",
            trigger: `body:not(:has(.modal)) ${card("Give the code")}:contains(Tour coupons (2 left))`,
        },
    ],
});
