import { registry } from "@web/core/registry";

// A salesperson opens a contact: the score is shown near the top, the history
// is one click away, and nothing offers to change the score.
registry.category("web_tour.tours").add("marketing_engagement_score_tour", {
    steps: () => [
        {
            content: "The contact's engagement score is shown as a badge",
            trigger: ".o_form_view .o_mea_engagement_score .o_mea_engagement_score_value:contains(42)",
        },
        {
            content: "Its band is shown next to it",
            trigger: ".o_form_view .o_mea_engagement_score:contains(Warm)",
        },
        {
            content: "A salesperson is not offered to adjust it",
            trigger: ".o_form_view .o_mea_engagement_score:not(:has(button[name=action_open_engagement_adjust]))",
        },
        {
            content: "Open the score history",
            trigger: ".o_form_view button[name=action_view_engagement_history]",
            run: "click",
        },
        {
            content: "The history lists the change and its reason",
            trigger: ".o_list_view .o_data_row:contains(Visited the booth)",
        },
    ],
});
