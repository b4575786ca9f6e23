/** @odoo-module **/
import { registry } from "@web/core/registry";

const status = (label) => `.o_statusbar_status .o_arrow_button_current:contains(${label})`;
const card = (text) => `.o_mea_flow .o_mea_flow_card:contains(${text})`;

/**
 * How the scenario comes to be. Swap these steps to start from a template
 * (e.g. abandoned cart): the canvas steps only need a saved or new scenario
 * form with an event trigger.
 */
function newScenarioSteps() {
    return [
        {
            content: "Create a scenario",
            trigger: ".o_list_button_add",
            run: "click",
        },
        {
            content: "Name it",
            trigger: ".o_form_view .o_field_widget[name=name] input",
            run: "edit Canvas tour scenario",
        },
        {
            content: "Contacts enter when they abandon a cart",
            trigger: ".o_form_view .o_field_widget[name=trigger_event_type_id] input",
            run: "edit Test cart abandoned",
        },
        {
            trigger: ".o-autocomplete--dropdown-item:contains(Test cart abandoned)",
            run: "click",
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
            content: "Add the first node under the trigger (saves the scenario first)",
            trigger: ".o_mea_flow .o_mea_flow_add[data-parent-id='0']",
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
            content: "The trigger card tells the event; the wait is drawn under it",
            trigger: `body:not(:has(.modal)) .o_mea_flow .o_mea_flow_trigger:contains(Test cart abandoned)`,
        },
        {
            trigger: `${card("Wait a day")}:contains(1 days)`,
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
            trigger: `body:not(:has(.modal)) ${card("Still interested?")}`,
        },
        {
            trigger: ".o_mea_flow .o_mea_flow_branch_yes .o_mea_flow_label:contains(Yes)",
        },
        {
            trigger: ".o_mea_flow .o_mea_flow_branch_no .o_mea_flow_label:contains(No)",
        },
        {
            content: "Add a node on the Yes branch",
            trigger: ".o_mea_flow .o_mea_flow_branch_yes .o_mea_flow_add",
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
            trigger: "body:not(:has(.modal)) .o_mea_flow .o_mea_flow_branch_yes .o_mea_flow_card:contains(VIP)",
        },
        {
            trigger: ".o_mea_flow .o_mea_flow_branch_no .o_mea_flow_add",
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
            trigger: ".o_mea_flow:not(:has(.o_mea_flow_locked)) .o_mea_flow_branch_no .o_mea_flow_add",
        },
    ];
}

registry.category("web_tour.tours").add("marketing_scenario_flow_tour", {
    steps: () => [...newScenarioSteps(), ...canvasSteps(), ...lifecycleSteps()],
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
