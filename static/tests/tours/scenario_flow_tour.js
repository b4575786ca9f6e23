/** @odoo-module **/
import { registry } from "@web/core/registry";

const status = (label) => `.o_statusbar_status .o_arrow_button_current:contains(${label})`;
const card = (text) => `.o_mea_flow .o_mea_flow_card:contains(${text})`;

/**
 * How the scenario comes to be: from the abandoned cart template (wait for a purchase,
 * reminder, wait again, coupon). The canvas steps below only need a scenario form whose
 * flow ends with a plain node (the coupon email here); swap these steps for another start.
 */
function fromAbandonedCartTemplateSteps() {
    return [
        {
            content: "Start from a template",
            trigger: ".o_control_panel .o_mea_new_from_template",
            run: "click",
        },
        {
            content: "The abandoned cart one",
            trigger: ".o_mea_template_abandoned_cart button[name=action_create_scenario]",
            run: "click",
        },
        {
            content: "The scenario is created as a draft",
            trigger: ".o_form_view .o_field_widget[name=name] input:value(Abandoned cart)",
        },
        {
            trigger: status("Draft"),
        },
    ];
}

/** Build wait → condition → (Yes) tag on the canvas, through its add buttons and the node dialog. */
function canvasSteps() {
    return [
        {
            content: "The flow tab shows the trigger",
            trigger: ".o_notebook .nav-link:contains(Flow)",
            run: "click",
        },
        {
            trigger: ".o_mea_flow .o_mea_flow_trigger:contains(On event)",
        },
        {
            content: "The template's waits for a purchase: Yes and No branches, the reminders on No",
            trigger: ".o_mea_flow .o_mea_flow_branch_no .o_mea_flow_card:contains(Cart reminder)",
        },
        {
            trigger: ".o_mea_flow .o_mea_flow_branch_no .o_mea_flow_card:contains(Cart coupon)",
        },
        {
            content: "Add a node after the coupon email",
            trigger: ".o_mea_flow .o_mea_flow_add[data-branch=always]:not([data-parent-id='0'])",
            run: "click",
        },
        {
            content: "A wait",
            trigger: ".modal .o_field_widget[name=node_type] select",
            run: 'select "wait"',
        },
        {
            trigger: ".modal .o_field_widget[name=name] input",
            run: "edit Wait a day",
        },
        {
            trigger: ".modal .o_field_widget[name=wait_amount] input",
            run: "edit 1",
        },
        {
            trigger: ".modal .o_form_button_save",
            run: "click",
        },
        {
            content: "The wait is drawn after the coupon",
            trigger: `body:not(:has(.modal)) ${card("Wait a day")}:contains(1 days)`,
        },
        {
            content: "Add a node after the wait",
            trigger: ".o_mea_flow .o_mea_flow_add[data-branch=always]:not([data-parent-id='0'])",
            run: "click",
        },
        {
            content: "A condition",
            trigger: ".modal .o_field_widget[name=node_type] select",
            run: 'select "condition"',
        },
        {
            trigger: ".modal .o_field_widget[name=name] input",
            run: "edit Still interested?",
        },
        {
            trigger: ".modal .o_field_widget[name=condition_type] select",
        },
        {
            trigger: ".modal .o_form_button_save",
            run: "click",
        },
        {
            content: "The condition has a Yes and a No branch",
            trigger: `body:not(:has(.modal)) ${card("Still interested?")} ~ .o_mea_flow_columns .o_mea_flow_branch_yes .o_mea_flow_label:contains(Yes)`,
        },
        {
            trigger: `${card("Still interested?")} ~ .o_mea_flow_columns .o_mea_flow_branch_no .o_mea_flow_label:contains(No)`,
        },
        {
            content: "Add a node on the Yes branch of the condition",
            trigger: `${card("Still interested?")} ~ .o_mea_flow_columns .o_mea_flow_branch_yes .o_mea_flow_add`,
            run: "click",
        },
        {
            trigger: ".modal-title:contains(Yes branch)",
        },
        {
            content: "Tag the contact",
            trigger: ".modal .o_field_widget[name=node_type] select",
            run: 'select "tag_add"',
        },
        {
            trigger: ".modal .o_field_widget[name=tag_ids] input",
            run: "edit VIP",
        },
        {
            trigger: ".o-autocomplete--dropdown-item:contains(VIP)",
            run: "click",
        },
        {
            trigger: ".modal .o_field_widget[name=tag_ids] .o_tag:contains(VIP)",
        },
        {
            trigger: ".modal .o_form_button_save",
            run: "click",
        },
        {
            content: "The tag hangs on the Yes branch, the No branch stays open",
            trigger: `body:not(:has(.modal)) ${card("Still interested?")} ~ .o_mea_flow_columns .o_mea_flow_branch_yes .o_mea_flow_card:contains(VIP)`,
        },
        {
            trigger: `${card("Still interested?")} ~ .o_mea_flow_columns .o_mea_flow_branch_no .o_mea_flow_add`,
        },
        {
            content: "The plain node list is still there",
            trigger: ".o_notebook .nav-link:contains(Nodes)",
        },
    ];
}

function lifecycleSteps() {
    return [
        {
            content: "Start it",
            trigger: ".o_form_view button[name=action_start]",
            run: "click",
        },
        {
            trigger: status("Running"),
        },
        {
            content: "While it runs, the canvas is read-only and says why",
            trigger: ".o_mea_flow .o_mea_flow_locked:contains(Pause)",
        },
        {
            trigger: ".o_mea_flow:not(:has(.o_mea_flow_add)):not(:has(.o_mea_flow_delete))",
        },
        {
            content: "Pause it",
            trigger: ".o_form_view button[name=action_pause]",
            run: "click",
        },
        {
            trigger: status("Paused"),
        },
        {
            content: "Paused, the flow can be edited again",
            trigger: ".o_mea_flow:not(:has(.o_mea_flow_locked)) .o_mea_flow_branch_yes .o_mea_flow_add",
        },
    ];
}

registry.category("web_tour.tours").add("marketing_scenario_flow_tour", {
    steps: () => [...fromAbandonedCartTemplateSteps(), ...canvasSteps(), ...lifecycleSteps()],
});

const waitCard = ".o_mea_flow .o_mea_flow_card:contains(Wait a week)";

registry.category("web_tour.tours").add("marketing_scenario_flow_delete_tour", {
    steps: () => [
        {
            content: "Delete the wait a contact is scheduled on",
            trigger: `${waitCard} .o_mea_flow_delete`,
            run: "click",
        },
        {
            trigger: ".modal .modal-footer .btn-primary:contains(Delete)",
            run: "click",
        },
        {
            content: "The engine refuses: a notification says why, the card stays",
            trigger: ".o_notification:contains(Some contacts are scheduled on these nodes)",
        },
        {
            trigger: `body:not(:has(.modal)) ${waitCard}:not(.o_mea_flow_archived)`,
        },
        {
            content: "Archive it instead (its scheduled steps are canceled)",
            trigger: `${waitCard} .o_mea_flow_archive`,
            run: "click",
        },
        {
            trigger: `${waitCard}.o_mea_flow_archived:contains(Archived)`,
        },
        {
            content: "Now nobody is scheduled on it: it can be deleted",
            trigger: `${waitCard} .o_mea_flow_delete`,
            run: "click",
        },
        {
            trigger: ".modal .modal-footer .btn-primary:contains(Delete)",
            run: "click",
        },
        {
            content: "The wait is gone, the first node can be added again under the trigger",
            trigger: ".o_mea_flow:not(:has(.o_mea_flow_card:contains(Wait a week))) .o_mea_flow_add[data-parent-id='0']",
        },
    ],
});
