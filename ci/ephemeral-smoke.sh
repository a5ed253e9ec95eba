#!/usr/bin/env bash
# The ephemeral stack's smoke computation: one worker, an SSM port forward to the scheduler, and a
# configured CI user who connects with their stack-issued certificate and computes.
#   ci/ephemeral-smoke.sh STACK CI_USER [CLUSTER]
# CLUSTER: one of a fleet stack's clusters (output `clusters`); without it, the stack's own cluster.
# Needs the Pulumi CLI (logged in to the stack's backend), the AWS CLI with the Session Manager
# plugin, and the repository's tooling environment (make install). Every wait is bounded.
set -euo pipefail

stack="${1:?usage: ci/ephemeral-smoke.sh STACK CI_USER [CLUSTER]}"
user="${2:?usage: ci/ephemeral-smoke.sh STACK CI_USER [CLUSTER]}"
member="${3:-}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="$repo/.venv/bin/python"
# A top-level output, or with CLUSTER the same key of that cluster's entry in the `clusters` output.
output() {
  if [ -z "$member" ] || [ "$1" = cluster ] || [ "$1" = region ] || [ "$1" = forwardedSchedulerAddress ]; then
    pulumi -C "$repo/infra" stack output --stack "$stack" "$1"
  else
    pulumi -C "$repo/infra" stack output --stack "$stack" clusters --json \
      | "$python" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]][sys.argv[2]])' "$member" "$1"
  fi
}
# Names and tags come from daskfleet.conventions, never spelled here.
convention() { "$python" -c "from daskfleet import conventions as c; print($1)"; }

command -v session-manager-plugin >/dev/null || {
  echo "smoke: the AWS Session Manager plugin is not installed (the port forward needs it)" >&2
  exit 1
}
cluster="${member:-$(output cluster)}"
region="$(output region)"
forward="$(output schedulerPortForwardCommand)"
address="$(output forwardedSchedulerAddress)"

workers="$(convention "c.node_group_name('${cluster}', 'worker')")"
scheduler="$(convention "c.node_group_name('${cluster}', 'scheduler')")"
cluster_tag="$(convention c.TAG_CLUSTER)"
role_tag="$(convention c.TAG_ROLE)"

echo "smoke: waking ${cluster} (a fleet's clusters start asleep) and asking for one worker in ${workers}"
aws autoscaling set-desired-capacity --region "$region" --auto-scaling-group-name "$scheduler" --desired-capacity 1
aws autoscaling set-desired-capacity --region "$region" --auto-scaling-group-name "$workers" --desired-capacity 1

echo "smoke: waiting (at most 10 minutes) for the scheduler instance to be reachable through Session Manager"
deadline=$((SECONDS + 600))
until [ "$(aws ssm describe-instance-information --region "$region" \
  --filters "Key=tag:${cluster_tag},Values=${cluster}" "Key=tag:${role_tag},Values=scheduler" \
  --query "length(InstanceInformationList[?PingStatus=='Online'])" --output text)" -ge 1 ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "smoke: no scheduler instance of ${cluster} came online in Session Manager within 10 minutes" >&2
    exit 1
  fi
  sleep 15
done

log="$(mktemp)"
bash -c "$forward" >"$log" 2>&1 &
forwarder=$!
trap 'kill "$forwarder" 2>/dev/null || true; rm -f "$log"' EXIT

echo "smoke: waiting (at most 2 minutes) for the port forward to ${address}"
deadline=$((SECONDS + 120))
until "$python" -c "import socket,sys; socket.create_connection(('localhost', int(sys.argv[1])), 2).close()" \
  "${address##*:}" 2>/dev/null; do
  if ! kill -0 "$forwarder" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
    echo "smoke: the port forward did not open within 2 minutes:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 3
done

echo "smoke: computing as user ${user}"
"$python" - "$cluster" "$address" "$user" "$region" <<'PY'
import sys

import daskfleet

cluster, address, user, region = sys.argv[1:]
with daskfleet.connect(cluster, address=address, user=user, region=region, timeout=60) as client:
    client.wait_for_workers(1, timeout=900)
    total = client.submit(sum, range(10)).result(timeout=120)
    assert total == 45, total
    print(f"smoke: {len(client.scheduler_info()['workers'])} worker(s) computed sum(range(10)) = {total}")
PY
