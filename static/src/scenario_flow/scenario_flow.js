/** @odoo-module **/
import { Component, useState } from "@odoo/owl";
import { ConfirmationDialog } from "@web/core/confirmation_dialog/confirmation_dialog";
import { _t } from "@web/core/l10n/translation";
import { registry } from "@web/core/registry";
import { useService } from "@web/core/utils/hooks";
import { useRecordObserver } from "@web/model/relational_model/utils";
import { FormViewDialog } from "@web/views/view_dialogs/form_view_dialog";
import { standardWidgetProps } from "@web/views/widgets/standard_widget_props";

const NODE_MODEL = "marketing.scenario.node";
const BRANCH_LABELS = {
    yes: _t("Yes"),
    no: _t("No"),
    always: _t("Always"),
};

/**
 * One node of the flow: its card, then what comes after it (the Yes/No arms of a
 * condition or of a wait for an event, the weighted arms of a split, or the next
 * nodes). Recursive: each following node is a ScenarioFlowNode again.
 */
export class ScenarioFlowNode extends Component {
    static template = "marketing_event_automation.ScenarioFlowNode";
    static props = { node: Object, flow: Object };

    get flow() {
        return this.props.flow;
    }

    /** The columns drawn under a condition or a wait for an event: Yes, No (and Always when used). */
    get forkBranches() {
        const branches = ["yes", "no"];
        if (this.flow.childrenOf(this.props.node.id, "always").length) {
            branches.push("always");
        }
        return branches;
    }

    /** A plain node followed by nodes already: the add button under it is gone, its card offers one. */
    get hasNextNodes() {
        const branching = ["condition", "wait_event", "split"].includes(this.props.node.node_type);
        return !branching && this.flow.childrenOf(this.props.node.id, "always").length > 0;
    }

    branchLabel(branch) {
        return BRANCH_LABELS[branch];
    }

    get arms() {
        const arms = this.flow.childrenOf(this.props.node.id, "arm");
        const total = arms.reduce((sum, arm) => sum + (arm.active ? arm.split_weight : 0), 0);
        return arms.map((arm) => ({
            node: arm,
            weight: arm.split_weight,
            percent: total && arm.active ? Math.round((100 * arm.split_weight) / total) : 0,
        }));
    }
}
ScenarioFlowNode.components = { ScenarioFlowNode };

/**
 * The visual flow of a scenario, on its form: the trigger, then the tree of nodes
 * as cards joined by lines, with the live statistics of each node. Everything is
 * read with one call (marketing.scenario.get_flow_data); every change goes through
 * the node's own form (in a dialog) or the model's methods, which enforce the
 * editing rules; their errors are shown as notifications.
 */
export class ScenarioFlow extends Component {
    static template = "marketing_event_automation.ScenarioFlow";
    static components = { ScenarioFlowNode };
    static props = { ...standardWidgetProps };

    setup() {
        this.orm = useService("orm");
        this.dialog = useService("dialog");
        this.notification = useService("notification");
        this.state = useState({ data: null, error: null, busy: false });
        this.loadedKey = null;
        this.sawDirty = false;
        this.flow = {
            childrenOf: this.childrenOf.bind(this),
            addNode: this.addNode.bind(this),
            openNode: this.openNode.bind(this),
            deleteNode: this.deleteNode.bind(this),
            toggleArchive: this.toggleArchive.bind(this),
            canEdit: () => this.canEdit,
        };
        useRecordObserver(async (record) => {
            // Draw what is saved: reload once the form is saved (or discarded), not at each keystroke.
            if (record.dirty) {
                this.sawDirty = true;
                return;
            }
            const key = `${record.resId}|${record.data.state}`;
            if (key !== this.loadedKey || this.sawDirty) {
                this.sawDirty = false;
                await this.load(record.resId, key);
            }
        });
    }

    get canEdit() {
        const data = this.state.data;
        return data ? data.can_edit : !this.props.readonly;
    }

    async load(resId = this.props.record.resId, key = null) {
        this.loadedKey = key || `${resId}|${this.props.record.data.state}`;
        if (!resId) {
            this.state.data = null;
            this.childrenIndex = new Map();
            return;
        }
        try {
            const data = await this.orm.call("marketing.scenario", "get_flow_data", [[resId]]);
            this.indexChildren(data.nodes);
            this.state.data = data;
            this.state.error = null;
        } catch (error) {
            this.state.error = this.errorMessage(error);
        }
    }

    indexChildren(nodes) {
        this.childrenIndex = new Map();
        for (const node of nodes) {
            const key = node.parent_id ? `${node.parent_id}|${node.branch}` : "root";
            if (!this.childrenIndex.has(key)) {
                this.childrenIndex.set(key, []);
            }
            this.childrenIndex.get(key).push(node);
        }
    }

    /** The nodes right after ``parentId`` on ``branch``; the first nodes when ``parentId`` is false. */
    childrenOf(parentId, branch) {
        const key = parentId ? `${parentId}|${branch}` : "root";
        return (this.childrenIndex && this.childrenIndex.get(key)) || [];
    }

    errorMessage(error) {
        return error?.data?.message || error?.message || String(error);
    }

    /** Save the scenario first (a new one gets its id, pending edits are kept), like a form button does. */
    async ensureSaved() {
        const record = this.props.record;
        if (record.isNew || (await record.isDirty())) {
            return await record.save();
        }
        return true;
    }

    /** After a change: reload the form (nodes list, counters) and the canvas. */
    async refresh() {
        await this.props.record.load();
        await this.load();
    }

    async addNode(parentId, branch) {
        if (!(await this.ensureSaved())) {
            return;
        }
        const context = {
            default_scenario_id: this.props.record.resId,
            default_parent_id: parentId || false,
            default_branch: parentId ? branch : "always",
        };
        let title = _t("Add a node");
        if (branch === "yes" || branch === "no") {
            title = _t("Add a node on the %(branch)s branch", { branch: BRANCH_LABELS[branch] });
        } else if (branch === "arm") {
            title = _t("Add an arm to the split");
        }
        this.openDialog({ context, title });
    }

    openNode(node) {
        this.openDialog({ resId: node.id, title: node.name });
    }

    openDialog({ resId = false, context = {}, title }) {
        let saved = false;
        this.dialog.add(
            FormViewDialog,
            {
                resModel: NODE_MODEL,
                resId,
                context,
                title,
                mode: this.canEdit ? "edit" : "readonly",
                preventCreate: !this.canEdit,
                preventEdit: !this.canEdit,
                onRecordSaved: () => {
                    saved = true;
                },
            },
            {
                onClose: async () => {
                    if (saved) {
                        await this.refresh();
                    }
                },
            }
        );
    }

    deleteNode(node) {
        this.dialog.add(ConfirmationDialog, {
            title: _t("Delete %(name)s", { name: node.name }),
            body: _t(
                "Delete this node and every node after it? Contacts still scheduled on them prevent it: archive the node instead."
            ),
            confirmLabel: _t("Delete"),
            confirm: async () => {
                await this.callModel(() => this.orm.unlink(NODE_MODEL, [node.id]));
            },
            cancel: () => {},
        });
    }

    async toggleArchive(node) {
        const method = node.active ? "action_archive" : "action_unarchive";
        await this.callModel(() => this.orm.call(NODE_MODEL, method, [[node.id]]));
    }

    /** Run a change through the model; its refusal (a UserError...) becomes a notification. */
    async callModel(change) {
        if (this.state.busy) {
            return;
        }
        this.state.busy = true;
        try {
            await change();
        } catch (error) {
            this.notification.add(this.errorMessage(error), {
                title: _t("The flow was not changed"),
                type: "danger",
            });
        } finally {
            this.state.busy = false;
        }
        await this.refresh();
    }
}

export const scenarioFlow = {
    component: ScenarioFlow,
    fieldDependencies: [{ name: "state", type: "selection" }],
};

registry.category("view_widgets").add("marketing_scenario_flow", scenarioFlow);
