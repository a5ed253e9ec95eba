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


def test_the_budget_stop_backstop_denies_the_scheduler_scaling_its_workers_up(example):
    from infra.helpers import statements

    action = example.one("aws:budgets/budgetAction:BudgetAction").inputs
    assert (action["actionType"], action["approvalModel"], action["notificationType"]) == (
        "APPLY_IAM_POLICY", "AUTOMATIC", "ACTUAL")
    assert action["actionThreshold"] == {"actionThresholdType": "PERCENTAGE", "actionThresholdValue": 100}
    assert action["budgetName"] == conventions.budget_name("analytics")
    assert action["definition"]["iamActionDefinition"]["roles"] == [conventions.iam_role_name("analytics", "scheduler")]
    assert action["subscribers"] == [{"address": "data-science-leads@example.com", "subscriptionType": "EMAIL"}]
    deny = example.one("aws:iam/policy:Policy", "budget-stop-deny-scaling")
    assert action["definition"]["iamActionDefinition"]["policyArn"] == deny.outputs["arn"]
    [statement] = statements(deny.inputs["policy"])
    assert statement["Effect"] == "Deny" and statement["Action"] == ["autoscaling:SetDesiredCapacity"]
    assert statement["Resource"] == [
        "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:*:autoScalingGroupName/daskfleet-analytics-worker"]
    # AWS Budgets alone may use the action's role, and only to attach that policy to the scheduler's role.
    role = example.one("aws:iam/role:Role", "budget-stop-action")
    [trust] = statements(role.inputs["assumeRolePolicy"])
    assert trust["Principal"] == {"Service": "budgets.amazonaws.com"} and trust["Condition"]["StringEquals"]
    grant = next(r for r in example.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == "budget-stop-action")
    [allowed] = statements(grant.inputs["policy"])
    assert sorted(allowed["Action"]) == ["iam:AttachRolePolicy", "iam:DetachRolePolicy"]
    assert allowed["Resource"] == ["arn:aws:iam::123456789012:role/daskfleet-analytics-scheduler"]
    assert allowed["Condition"] == {"ArnEquals": {"iam:PolicyARN": deny.outputs["arn"]}}


def test_no_backstop_when_the_hard_stop_is_off():
    from infra.program import evaluate_program, example_config

    record = evaluate_program({**example_config(), "budgetHardStopPercent": 0})
    assert record.of_type("aws:budgets/budgetAction:BudgetAction") == []
    assert record.one("aws:budgets/budget:Budget").inputs["notifications"]  # the e-mails stay as they are
