"""Launch templates, instances, volumes: IMDSv2 at hop limit 1, encrypted EBS, no public IP or key pair, clean user data."""

import base64
import gzip

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from policy.harness import UNKNOWN, resource_violations

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
INSTANCE = "aws:ec2/instance:Instance"
VOLUME = "aws:ebs/volume:Volume"

BOOT_SCRIPT = "#!/bin/bash\nexec /opt/daskfleet/bin/daskfleet agent --source aws --cluster team-a --role worker\n"
PRIVATE_KEY_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    .decode()
)
CERTIFICATE_PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUX1y2\n-----END CERTIFICATE-----\n"


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def launch_template(**overrides):
    """A launch template the way the program should declare one, with ``overrides`` applied."""
    props = {
        "imageId": "ami-0123456789abcdef0",
        "metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1.0},
        "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": "true", "volumeSize": 50.0}}],
        "networkInterfaces": [{"associatePublicIpAddress": "false", "securityGroups": ["sg-0worker"]}],
        "userData": b64(BOOT_SCRIPT),
    }
    props.update(overrides)
    return props


def instance(**overrides):
    props = {
        "ami": "ami-0123456789abcdef0",
        "instanceType": "m7i.large",
        "metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 1},
        "rootBlockDevice": {"encrypted": True},
        "userData": BOOT_SCRIPT,
    }
    props.update(overrides)
    return props


ALL = ["imdsv2-required", "ebs-encrypted", "no-public-ip", "no-ssh-key-pair", "no-secrets-in-user-data"]


@pytest.mark.parametrize("policy", ALL)
@pytest.mark.parametrize(("resource_type", "props"), [(LAUNCH_TEMPLATE, launch_template()), (INSTANCE, instance())])
def test_nodes_declared_as_intended_pass_every_compute_policy(policy, resource_type, props):
    assert resource_violations(policy, resource_type, props) == []


# --- IMDSv2 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"httpTokens": "optional", "httpPutResponseHopLimit": 1}, "httpTokens is 'optional'"),
        ({"httpPutResponseHopLimit": 1}, "httpTokens is None"),
        ({"httpTokens": "required", "httpPutResponseHopLimit": 2.0}, "httpPutResponseHopLimit is 2"),
        ({"httpTokens": "required"}, "httpPutResponseHopLimit is not set"),
    ],
)
def test_launch_templates_without_imdsv2_at_hop_limit_1_fail(options, expected):
    [message] = resource_violations("imdsv2-required", LAUNCH_TEMPLATE, launch_template(metadataOptions=options))
    assert expected in message


def test_a_launch_template_without_metadata_options_fails_twice():
    props = launch_template()
    del props["metadataOptions"]
    assert len(resource_violations("imdsv2-required", LAUNCH_TEMPLATE, props)) == 2


def test_an_instance_without_imdsv2_fails():
    props = instance(metadataOptions={"httpTokens": "optional", "httpPutResponseHopLimit": 1})
    [message] = resource_violations("imdsv2-required", INSTANCE, props)
    assert "set it to 'required'" in message


def test_metadata_service_switched_off_passes():
    assert resource_violations("imdsv2-required", INSTANCE, instance(metadataOptions={"httpEndpoint": "disabled"})) == []


# --- EBS encryption ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mappings", "expected"),
    [
        ([{"deviceName": "/dev/xvda", "ebs": {"encrypted": "false"}}], "blockDeviceMappings[0].ebs is not encrypted"),
        ([{"deviceName": "/dev/xvda", "ebs": {"volumeSize": 50}}], "blockDeviceMappings[0].ebs is not encrypted"),
        ([], "declares no EBS block device mapping"),
        ([{"deviceName": "/dev/sdb", "virtualName": "ephemeral0"}], "declares no EBS block device mapping"),
    ],
)
def test_launch_templates_with_unencrypted_or_unmapped_disks_fail(mappings, expected):
    [message] = resource_violations("ebs-encrypted", LAUNCH_TEMPLATE, launch_template(blockDeviceMappings=mappings))
    assert expected in message


def test_instance_store_and_suppressed_devices_are_not_ebs():
    mappings = launch_template()["blockDeviceMappings"] + [
        {"deviceName": "/dev/sdb", "virtualName": "ephemeral0"},
        {"deviceName": "/dev/sdc", "noDevice": "true"},
    ]
    assert resource_violations("ebs-encrypted", LAUNCH_TEMPLATE, launch_template(blockDeviceMappings=mappings)) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"rootBlockDevice": {"encrypted": False}}, "rootBlockDevice is not encrypted"),
        ({"rootBlockDevice": None}, "has no rootBlockDevice"),
        (
            {"ebsBlockDevices": [{"deviceName": "/dev/sdb", "encrypted": True}, {"deviceName": "/dev/sdc"}]},
            "ebsBlockDevices[1] is not encrypted",
        ),
    ],
)
def test_instances_with_unencrypted_disks_fail(overrides, expected):
    props = {key: value for key, value in instance(**overrides).items() if value is not None}
    [message] = resource_violations("ebs-encrypted", INSTANCE, props)
    assert expected in message


@pytest.mark.parametrize(("encrypted", "fails"), [(True, False), (UNKNOWN, False), (False, True), (None, True)])
def test_standalone_volumes_must_be_encrypted(encrypted, fails):
    props = {"availabilityZone": "eu-west-1a", "size": 100.0}
    if encrypted is not None:
        props["encrypted"] = encrypted
    assert bool(resource_violations("ebs-encrypted", VOLUME, props)) is fails


# --- public IP and key pair ----------------------------------------------------------------


@pytest.mark.parametrize(("value", "fails"), [("true", True), (True, True), ("false", False), (UNKNOWN, False)])
def test_launch_template_interfaces_get_no_public_ip(value, fails):
    props = launch_template(networkInterfaces=[{"associatePublicIpAddress": value}])
    assert bool(resource_violations("no-public-ip", LAUNCH_TEMPLATE, props)) is fails


def test_an_instance_with_a_public_ip_fails():
    assert resource_violations("no-public-ip", INSTANCE, instance(associatePublicIpAddress=True))


@pytest.mark.parametrize(
    ("resource_type", "props"), [(LAUNCH_TEMPLATE, launch_template(keyName="ops")), (INSTANCE, instance(keyName="ops"))]
)
def test_a_key_pair_fails(resource_type, props):
    [message] = resource_violations("no-ssh-key-pair", resource_type, props)
    assert "keyName is 'ops'" in message


def test_a_key_pair_fails_even_before_its_name_is_known():
    assert resource_violations("no-ssh-key-pair", LAUNCH_TEMPLATE, launch_template(keyName=UNKNOWN))


# --- user data -----------------------------------------------------------------------------


def script_with(secret: str) -> str:
    return f"{BOOT_SCRIPT}cat > /etc/daskfleet/tls/key.pem <<'EOF'\n{secret}EOF\n"


@pytest.mark.parametrize(
    ("resource_type", "field", "user_data", "expected"),
    [
        (LAUNCH_TEMPLATE, "userData", b64(script_with(PRIVATE_KEY_PEM)), "a PEM private key"),
        (LAUNCH_TEMPLATE, "userData", b64(gzip.compress(script_with(PRIVATE_KEY_PEM).encode())), "a PEM private key"),
        (LAUNCH_TEMPLATE, "userData", b64(f"{BOOT_SCRIPT}echo {b64(PRIVATE_KEY_PEM)} | base64 -d > /k\n"), "a PEM private key"),
        (INSTANCE, "userData", script_with(PRIVATE_KEY_PEM.replace("PRIVATE KEY", "RSA PRIVATE KEY")), "a PEM private key"),
        (INSTANCE, "userDataBase64", b64(script_with(PRIVATE_KEY_PEM)), "a PEM private key"),
        (INSTANCE, "userData", "#!/bin/sh\nexport AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n", "an AWS access key id"),
        (INSTANCE, "userData", "[default]\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG\n", "an AWS secret access key"),
    ],
)
def test_user_data_carrying_a_secret_fails(resource_type, field, user_data, expected):
    props = {k: v for k, v in (launch_template() if resource_type == LAUNCH_TEMPLATE else instance()).items() if k != "userData"}
    [message] = resource_violations("no-secrets-in-user-data", resource_type, {**props, field: user_data})
    assert message.startswith(f"{field} contains {expected}")


@pytest.mark.parametrize(
    "user_data",
    [b64(BOOT_SCRIPT + CERTIFICATE_PEM), b64(gzip.compress(BOOT_SCRIPT.encode())), UNKNOWN, "not base64 at all: #!/bin/sh"],
)
def test_user_data_without_secrets_passes(user_data):
    assert resource_violations("no-secrets-in-user-data", LAUNCH_TEMPLATE, launch_template(userData=user_data)) == []
