"""The cluster's log group and its budget."""

from __future__ import annotations

from daskfleet import conventions


def test_the_log_group_has_the_conventional_name_and_a_retention(example):
    group = example.one("aws:cloudwatch/logGroup:LogGroup", "observability-logs").inputs
    assert group == {"name": conventions.log_group_name("analytics"), "retentionInDays": 30}
    assert example.outputs["logGroupName"] == "/daskfleet/analytics"


def test_the_budget_watches_the_clusters_cost_allocation_tag(example):
    budget = example.one("aws:budgets/budget:Budget").inputs
    assert (budget["budgetType"], budget["timeUnit"], budget["limitUnit"], budget["limitAmount"]) == ("COST", "MONTHLY", "USD", "500")
    assert budget["costFilters"] == [{"name": "TagKeyValue", "values": ["user:daskfleet:cluster$analytics"]}]
    notifications = budget["notifications"]
    assert [n["threshold"] for n in notifications] == [50, 80, 100]
    for notification in notifications:
        assert notification["notificationType"] == "ACTUAL" and notification["thresholdType"] == "PERCENTAGE"
        assert notification["comparisonOperator"] == "GREATER_THAN"
        assert notification["subscriberEmailAddresses"] == ["data-science-leads@example.com"]
