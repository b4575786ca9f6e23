/** @odoo-module **/
import { registry } from "@web/core/registry";

const row = (key) => `.o_data_row:has(td[name=key]:contains(${key}))`;

function toggleFilter(label) {
    return [
        {
            content: "Open the filter menu",
            trigger: ".o_control_panel .o_searchview_dropdown_toggler",
            run: "click",
        },
        {
            content: `Toggle the "${label}" filter`,
            trigger: `.o_filter_menu .o_menu_item:contains(${label})`,
            run: "click",
        },
        {
            content: "Close the filter menu",
            trigger: ".o_control_panel .o_searchview_dropdown_toggler",
            run: "click",
        },
    ];
}

registry.category("web_tour.tours").add("marketing_event_types_tour", {
    steps: () => [
        {
            content: "The event type list is shown",
            trigger: ".o_list_view .o_data_row",
        },
        {
            content: "Search by key",
            trigger: ".o_searchview_input",
            run: "edit tour_",
        },
        {
            content: "Validate the search on name or key",
            trigger: ".o_searchview_input",
            run: "press Enter",
        },
        {
            content: "Only the matching active types are listed: other keys are gone",
            trigger: `.o_list_view:not(:has(${row("test_purchase")})):not(:has(${row("tour_archived")})) ${row("tour_purchase")}`,
        },
        {
            trigger: `${row("tour_signup")}`,
        },
        ...toggleFilter("Inactive"),
        {
            content: "Inactive: only the archived type is left",
            trigger: `.o_list_view:not(:has(${row("tour_purchase")})) ${row("tour_archived")}`,
        },
        ...toggleFilter("Inactive"),
        ...toggleFilter("Active"),
        {
            content: "Active: the archived type is gone again",
            trigger: `.o_searchview_facet:contains(Active)`,
        },
        {
            trigger: `.o_list_view:not(:has(${row("tour_archived")})) ${row("tour_purchase")}`,
        },
        {
            content: "The dependencies column counts the scenarios depending on each type",
            trigger: `${row("tour_purchase")} td[name=dependency_count]:contains(1)`,
        },
        ...toggleFilter("Launch"),
        {
            content: "Launch: only the type that starts a scenario is listed",
            trigger: `.o_list_view:not(:has(${row("tour_purchase")})) ${row("tour_signup")}`,
        },
        ...toggleFilter("Launch"),
        ...toggleFilter("Stop"),
        {
            content: "Stop: only the type that makes contacts leave a scenario is listed",
            trigger: `.o_list_view:not(:has(${row("tour_signup")})) ${row("tour_purchase")}`,
        },
        ...toggleFilter("Stop"),
        ...toggleFilter("Without dependencies"),
        {
            content: "Without dependencies: only the type no scenario uses is listed",
            trigger: `.o_list_view:not(:has(${row("tour_purchase")})):not(:has(${row("tour_signup")})) ${row("tour_newsletter")}`,
        },
        ...toggleFilter("Without dependencies"),
        {
            trigger: `${row("tour_purchase")}`,
        },
        ...toggleFilter("Segmentation"),
        {
            content: "Segmentation: only the segmentation type is listed",
            trigger: `.o_list_view:not(:has(${row("tour_purchase")})) ${row("tour_signup")}`,
        },
        ...toggleFilter("Segmentation"),
        {
            content: "Turn segmentation on for the purchase type",
            trigger: `${row("tour_purchase")} td[name=use_for_segmentation] input`,
            run: "click",
        },
        {
            content: "The switch is on",
            trigger: `${row("tour_purchase")} td[name=use_for_segmentation] input:checked`,
        },
        ...toggleFilter("Segmentation"),
        {
            content: "Segmentation now lists the purchase type too",
            trigger: `${row("tour_signup")}`,
        },
        {
            trigger: `${row("tour_purchase")}`,
        },
        {
            content: "Open the structure preview of the purchase type",
            trigger: `${row("tour_purchase")} button[name=action_structure_preview]`,
            run: "click",
        },
        {
            content: "The learned structure shows the parameters seen",
            trigger: ".modal .o_mea_structure_preview:contains(sku)",
        },
        {
            trigger: ".modal .o_field_widget[name=params_structure_paths]:contains(items[].sku: string)",
        },
        {
            content: "The sample can be copied",
            trigger: ".modal .o_field_CopyClipboardButton .o_clipboard_button",
        },
        {
            content: "Close the preview",
            trigger: ".modal .modal-footer button:contains(Close)",
            run: "click",
        },
        {
            trigger: "body:not(:has(.modal))",
        },
        {
            content: "Open the purchase type's form",
            trigger: `${row("tour_purchase")} td[name=name]`,
            run: "click",
        },
        {
            content: "The form shows the learned structure in its own tab",
            trigger: ".o_form_view .o_notebook a:contains(Learned Structure)",
            run: "click",
        },
        {
            trigger: ".o_form_view .o_field_widget[name=params_structure_paths]:contains(items[].quantity: integer)",
        },
        {
            content: "Back to the list",
            trigger: ".o_breadcrumb .breadcrumb-item a:contains(Event Types)",
            run: "click",
        },
        {
            content: "Select the purchase type, which a running scenario depends on",
            trigger: `${row("tour_purchase")} td.o_list_record_selector input[type=checkbox]`,
            run: "click",
        },
        {
            content: "Open the actions menu",
            trigger: ".o_cp_action_menus button:contains(Actions)",
            run: "click",
        },
        {
            content: "Delete",
            trigger: ".o-dropdown--menu .o-dropdown-item:contains(Delete)",
            run: "click",
        },
        {
            content: "Confirm",
            trigger: ".modal .modal-footer button.btn-primary:contains(Delete)",
            run: "click",
        },
        {
            content: "The deletion is refused, naming the running scenario",
            trigger: ".modal .modal-body:contains(cannot be deleted):contains(Tour welcome)",
        },
        {
            content: "Close the message",
            trigger: ".modal .modal-footer button:contains(Close)",
            run: "click",
        },
        {
            trigger: `body:not(:has(.modal)) ${row("tour_purchase")}`,
        },
        {
            content: "Unselect the purchase type",
            trigger: `${row("tour_purchase")} td.o_list_record_selector input[type=checkbox]:checked`,
            run: "click",
        },
        {
            content: "Open the event history of the purchase type",
            trigger: `${row("tour_purchase")} button[name=action_view_events]`,
            run: "click",
        },
        {
            content: "The history lists the type's events with their parameters",
            trigger: ".o_breadcrumb:contains(Event History: Tour purchase)",
        },
        {
            trigger: ".o_list_view .o_data_row td[name=params_summary]:contains(total)",
        },
        {
            content: "Switch to the pivot view",
            trigger: ".o_switch_view.o_pivot",
            run: "click",
        },
        {
            content: "The pivot counts the events per type and day",
            trigger: ".o_pivot th:contains(Tour purchase)",
        },
        {
            content: "Switch to the graph view",
            trigger: ".o_switch_view.o_graph",
            run: "click",
        },
        {
            trigger: ".o_graph_renderer canvas",
        },
    ],
});
