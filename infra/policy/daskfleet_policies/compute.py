"""Instances and launch templates: IMDSv2 only, encrypted disks, no public IP, no SSH key, clean user data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import tokens
from .properties import as_int, as_list, as_mapping, is_set, is_true, is_unknown
from .user_data import find_secrets

MAX_HOP_LIMIT = 1
_LAUNCHES_INSTANCES = tokens.INSTANCE_LIKE_TYPES | {tokens.LAUNCH_TEMPLATE}


def imds_v2(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """IMDSv2 required, and its token must not travel past the instance (hop limit 1)."""
    if resource_type not in _LAUNCHES_INSTANCES:
        return []
    options = props.get("metadataOptions")
    if is_unknown(options):
        return []
    options = as_mapping(options)
    if options.get("httpEndpoint") == "disabled":
        return []
    problems = []
    http_tokens = options.get("httpTokens")
    if not is_unknown(http_tokens) and http_tokens != "required":
        problems.append(f"metadataOptions.httpTokens is {http_tokens!r}: set it to 'required' so only IMDSv2 answers")
    hop_limit = options.get("httpPutResponseHopLimit")
    if not is_unknown(hop_limit):
        hops = as_int(hop_limit)
        if hops is None:
            problems.append(
                f"metadataOptions.httpPutResponseHopLimit is not set: set it to {MAX_HOP_LIMIT} "
                "(an AMI's default may be 2, letting containers reach the instance's credentials)"
            )
        elif hops > MAX_HOP_LIMIT:
            problems.append(f"metadataOptions.httpPutResponseHopLimit is {hops}: it must be at most {MAX_HOP_LIMIT}")
    return problems


def ebs_encryption(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Every EBS volume an instance gets, and every standalone volume, is encrypted."""
    if resource_type == tokens.EBS_VOLUME:
        return _unencrypted("volume", props.get("encrypted"))
    if resource_type == tokens.LAUNCH_TEMPLATE:
        return _launch_template_ebs(props)
    if resource_type in tokens.INSTANCE_LIKE_TYPES:
        return _instance_ebs(props)
    return []


def _unencrypted(where: str, encrypted: Any) -> list[str]:
    if is_unknown(encrypted) or is_true(encrypted):
        return []
    return [f"{where} is not encrypted (encrypted={encrypted!r}): set encrypted to true"]


def _launch_template_ebs(props: Mapping[str, Any]) -> list[str]:
    mappings = props.get("blockDeviceMappings")
    if is_unknown(mappings):
        return []
    problems: list[str] = []
    ebs_devices = 0
    for index, mapping in enumerate(as_list(mappings)):
        if is_unknown(mapping):
            ebs_devices += 1
            continue
        mapping = as_mapping(mapping)
        if is_set(mapping.get("noDevice")) or is_set(mapping.get("virtualName")):
            continue  # suppresses a device, or names instance store: no EBS volume
        ebs_devices += 1
        ebs = mapping.get("ebs")
        if not is_unknown(ebs):
            problems += _unencrypted(f"blockDeviceMappings[{index}].ebs", as_mapping(ebs).get("encrypted"))
    if ebs_devices == 0:
        problems.append(
            "declares no EBS block device mapping, so the root volume's encryption is left to the AMI: "
            "map the root device with ebs.encrypted = 'true'"
        )
    return problems


def _instance_ebs(props: Mapping[str, Any]) -> list[str]:
    root = props.get("rootBlockDevice")
    if root is None:
        problems = ["has no rootBlockDevice, so the root volume's encryption is left to the AMI: "
                    "set rootBlockDevice.encrypted to true"]
    elif is_unknown(root):
        problems = []
    else:
        problems = _unencrypted("rootBlockDevice", as_mapping(root).get("encrypted"))
    devices = props.get("ebsBlockDevices")
    if not is_unknown(devices):
        for index, device in enumerate(as_list(devices)):
            if not is_unknown(device):
                problems += _unencrypted(f"ebsBlockDevices[{index}]", as_mapping(device).get("encrypted"))
    return problems


def public_ip(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Nodes never get a public address."""
    if resource_type == tokens.LAUNCH_TEMPLATE:
        return [
            f"networkInterfaces[{index}].associatePublicIpAddress is true: nodes live in private subnets"
            for index, interface in enumerate(as_list(props.get("networkInterfaces")))
            if is_true(as_mapping(interface).get("associatePublicIpAddress"))
        ]
    if resource_type in tokens.INSTANCE_LIKE_TYPES and is_true(props.get("associatePublicIpAddress")):
        return ["associatePublicIpAddress is true: nodes live in private subnets"]
    return []


def ssh_key_pair(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """No EC2 key pair: there is no SSH, Session Manager is the way in."""
    key_name = props.get("keyName")
    if resource_type in _LAUNCHES_INSTANCES and is_set(key_name):  # even one not known yet: any key pair fails
        return [f"keyName is {key_name!r}: nodes carry no SSH key pair; use SSM Session Manager"]
    return []


def user_data_secrets(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """User data carries no private key or credential."""
    if resource_type not in _LAUNCHES_INSTANCES:
        return []
    problems = []
    for field in ("userData", "userDataBase64"):
        value = props.get(field)
        if isinstance(value, str):
            problems += [
                f"{field} contains {secret}: secrets are fetched at boot through the instance role, "
                "never passed in user data"
                for secret in find_secrets(value)
            ]
    return problems
