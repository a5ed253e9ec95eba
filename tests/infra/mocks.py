"""Pulumi mocks for the daskfleet program: AWS answers from a fake account, TLS resources with REAL keys.

Test machinery, not the program: tests/infra/evaluate.py runs infra/__main__.py under these
mocks, and the tests import them as ``infra.mocks`` (tests/ is on pytest's pythonpath).

``ProgramMocks`` branches on type tokens. pulumi-tls resources are computed with
``cryptography`` exactly as their inputs ask (curve, subject, SANs, allowed uses, validity),
so the certificates a mocked program issues can serve real TLS connections. Every resource
(type, name, inputs, outputs, parent, provider) and every invoke is recorded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pulumi.asset import Archive, Asset, AssetArchive
from pulumi.runtime import Mocks
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs
from pulumi.runtime.rpc import is_rpc_secret, unwrap_rpc_secret

ACCOUNT_ID = "123456789012"
ROOT_STACK_TYPE = "pulumi:pulumi:Stack"
DEPLOYER_ROLE = "platform-deployer"
S3_PREFIX_LIST_ID = "pl-6da54004"
DEFAULT_ROOT_DEVICE = "/dev/xvda"

# --- pulumi-tls, for real ------------------------------------------------------------------------

_CURVES = {"P224": ec.SECP224R1, "P256": ec.SECP256R1, "P384": ec.SECP384R1, "P521": ec.SECP521R1}
_KEY_USAGES = {
    "digital_signature": "digital_signature", "content_commitment": "content_commitment",
    "key_encipherment": "key_encipherment", "data_encipherment": "data_encipherment",
    "key_agreement": "key_agreement", "cert_signing": "key_cert_sign", "crl_signing": "crl_sign",
    "encipher_only": "encipher_only", "decipher_only": "decipher_only",
}
_EXTENDED_KEY_USAGES = {
    "any_extended": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE, "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH, "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION, "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
}
_SUBJECT_FIELDS = {
    "commonName": NameOID.COMMON_NAME, "organization": NameOID.ORGANIZATION_NAME,
    "organizationalUnit": NameOID.ORGANIZATIONAL_UNIT_NAME, "country": NameOID.COUNTRY_NAME,
    "province": NameOID.STATE_OR_PROVINCE_NAME, "locality": NameOID.LOCALITY_NAME,
    "postalCode": NameOID.POSTAL_CODE, "serialNumber": NameOID.SERIAL_NUMBER, "emailAddress": NameOID.EMAIL_ADDRESS,
}


def _pem(data: bytes) -> str:
    return data.decode()


def _private_key(inputs: Mapping[str, Any]) -> dict[str, Any]:
    algorithm = inputs.get("algorithm")
    if algorithm == "ECDSA":
        curve = inputs.get("ecdsaCurve", "P224")
        if curve not in _CURVES:
            raise ValueError(f"tls PrivateKey: unsupported ecdsaCurve {curve!r}")
        key: Any = ec.generate_private_key(_CURVES[curve]())
        traditional = serialization.PrivateFormat.TraditionalOpenSSL
    elif algorithm == "RSA":
        key = rsa.generate_private_key(public_exponent=65537, key_size=int(inputs.get("rsaBits", 2048)))
        traditional = serialization.PrivateFormat.TraditionalOpenSSL
    elif algorithm == "ED25519":
        key = ed25519.Ed25519PrivateKey.generate()
        traditional = serialization.PrivateFormat.PKCS8
    else:
        raise ValueError(f"tls PrivateKey: unsupported algorithm {algorithm!r}")
    public = key.public_key()
    public_der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        **inputs,
        "privateKeyPem": _pem(key.private_bytes(serialization.Encoding.PEM, traditional, serialization.NoEncryption())),
        "privateKeyPemPkcs8": _pem(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )),
        "publicKeyPem": _pem(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)),
        "publicKeyFingerprintSha256": hashlib.sha256(public_der).hexdigest(),
        "id": hashlib.sha1(public_der).hexdigest(),
    }


def _load_key(pem: str) -> Any:
    return serialization.load_pem_private_key(pem.encode(), password=None)


def _subject(fields: Mapping[str, Any] | None) -> x509.Name:
    attributes = []
    for key, value in (fields or {}).items():
        if key not in _SUBJECT_FIELDS and key != "streetAddresses":
            raise ValueError(f"tls subject: unsupported field {key!r}")
        if key in _SUBJECT_FIELDS and value:
            attributes.append(x509.NameAttribute(_SUBJECT_FIELDS[key], value))
    return x509.Name(attributes)


def _sans(inputs: Mapping[str, Any]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in inputs.get("dnsNames") or []]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in inputs.get("ipAddresses") or []]
    names += [x509.UniformResourceIdentifier(uri) for uri in inputs.get("uris") or []]
    return names


def _usages(allowed: Sequence[str]) -> tuple[x509.KeyUsage | None, x509.ExtendedKeyUsage | None]:
    unknown = [use for use in allowed if use not in _KEY_USAGES and use not in _EXTENDED_KEY_USAGES]
    if unknown:
        raise ValueError(f"tls allowed_uses: unsupported value(s) {unknown}")
    flags = {name: False for name in _KEY_USAGES.values()}
    for use in allowed:
        if use in _KEY_USAGES:
            flags[_KEY_USAGES[use]] = True
    key_usage = x509.KeyUsage(**flags) if any(flags.values()) else None
    extended = [_EXTENDED_KEY_USAGES[use] for use in allowed if use in _EXTENDED_KEY_USAGES]
    return key_usage, (x509.ExtendedKeyUsage(extended) if extended else None)


def _certificate(
    inputs: Mapping[str, Any], *, subject: x509.Name, sans: list[x509.GeneralName], public_key: Any,
    issuer: x509.Name, signing_key: Any, issuer_key_id: x509.SubjectKeyIdentifier | None,
) -> dict[str, Any]:
    """What the tls provider builds: validity from now, basic constraints, usages, SANs, key ids."""
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    end = start + dt.timedelta(hours=int(inputs["validityPeriodHours"]))
    is_ca = bool(inputs.get("isCaCertificate"))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=inputs.get("maxPathLength") if is_ca else None), critical=True)
    )
    key_usage, extended = _usages(inputs.get("allowedUses") or [])
    if key_usage:
        builder = builder.add_extension(key_usage, critical=True)
    if extended:
        builder = builder.add_extension(extended, critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if inputs.get("setSubjectKeyId"):
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if issuer_key_id is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_key_id), critical=False
        )
    algorithm = None if isinstance(signing_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = builder.sign(signing_key, algorithm)
    return {
        **inputs,
        "certPem": _pem(cert.public_bytes(serialization.Encoding.PEM)),
        "validityStartTime": start.isoformat().replace("+00:00", "Z"),
        "validityEndTime": end.isoformat().replace("+00:00", "Z"),
        "readyForRenewal": False,
        "id": str(cert.serial_number),
    }


def _self_signed_cert(inputs: Mapping[str, Any]) -> dict[str, Any]:
    key = _load_key(inputs["privateKeyPem"])
    subject = _subject(inputs.get("subject"))
    return _certificate(
        inputs, subject=subject, sans=_sans(inputs), public_key=key.public_key(),
        issuer=subject, signing_key=key, issuer_key_id=None,
    )


def _cert_request(inputs: Mapping[str, Any]) -> dict[str, Any]:
    key = _load_key(inputs["privateKeyPem"])
    builder = x509.CertificateSigningRequestBuilder().subject_name(_subject(inputs.get("subject")))
    sans = _sans(inputs)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    request = builder.sign(key, hashes.SHA256())
    return {**inputs, "certRequestPem": _pem(request.public_bytes(serialization.Encoding.PEM))}


def _locally_signed_cert(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Signs the request's subject and SANs (as the tls provider does) with the CA."""
    request = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
    ca_cert = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
    ca_key = _load_key(inputs["caPrivateKeyPem"])
    try:
        sans = list(request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    try:
        ca_key_id = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        ca_key_id = x509.SubjectKeyIdentifier.from_public_key(ca_cert.public_key())
    return _certificate(
        inputs, subject=request.subject, sans=sans, public_key=request.public_key(),
        issuer=ca_cert.subject, signing_key=ca_key, issuer_key_id=ca_key_id,
    )


_TLS = {
    "tls:index/privateKey:PrivateKey": _private_key,
    "tls:index/selfSignedCert:SelfSignedCert": _self_signed_cert,
    "tls:index/certRequest:CertRequest": _cert_request,
    "tls:index/locallySignedCert:LocallySignedCert": _locally_signed_cert,
}

# --- AWS, a fake account --------------------------------------------------------------------------

#: type token -> (id prefix, name property filled by autonaming when not given)
_AUTONAMED = {
    "aws:s3/bucket:Bucket": "bucket",
    "aws:ec2/securityGroup:SecurityGroup": "name",
    "aws:ec2/launchTemplate:LaunchTemplate": "name",
}
_ID_PREFIXES = {
    "aws:ec2/vpc:Vpc": "vpc-", "aws:ec2/subnet:Subnet": "subnet-", "aws:ec2/routeTable:RouteTable": "rtb-",
    "aws:ec2/securityGroup:SecurityGroup": "sg-", "aws:ec2/vpcEndpoint:VpcEndpoint": "vpce-",
    "aws:ec2/internetGateway:InternetGateway": "igw-", "aws:ec2/natGateway:NatGateway": "nat-",
    "aws:ec2/eip:Eip": "eipalloc-", "aws:ec2/launchTemplate:LaunchTemplate": "lt-",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "sgr-",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "sgr-",
    "aws:ec2/routeTableAssociation:RouteTableAssociation": "rtbassoc-", "aws:ec2/route:Route": "r-",
}


def _reveal(value: Any) -> Any:
    """An input with the secret wrappers the mock monitor leaves in place taken off."""
    if is_rpc_secret(value):
        return _reveal(unwrap_rpc_secret(value))
    if isinstance(value, Mapping):
        return {key: _reveal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_reveal(item) for item in value]
    return value


def _digest(*parts: str, length: int = 17) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


class ProgramMocks(Mocks):
    """AWS and TLS answers for evaluating the program; ``resources`` and ``calls`` record what it did.

    ``images``: the account's own AMIs, each {"id", "tags", "root_device_name"}.
    ``vpcs``/``subnets``: existing network an adopting stack may name, by id.
    """

    def __init__(
        self,
        *,
        region: str = "eu-west-1",
        account_id: str = ACCOUNT_ID,
        images: Sequence[Mapping[str, Any]] = (),
        vpcs: Mapping[str, Mapping[str, Any]] | None = None,
        subnets: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        self.region = region
        self.account_id = account_id
        self.images = [dict(image) for image in images]
        self.vpcs = dict(vpcs or {})
        self.subnets = dict(subnets or {})
        self.resources: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        #: (type, name) -> records created but not registered yet, oldest first (registration finds its own at once).
        self._unregistered: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    # --- resources ---

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        secret_inputs = sorted(key for key, value in args.inputs.items() if is_rpc_secret(value))
        inputs = {key: _reveal(value) for key, value in args.inputs.items()}
        if args.typ in _TLS:
            outputs = _TLS[args.typ](inputs)
            resource_id = outputs.pop("id", None) or _digest(args.typ, args.name, length=40)
        elif args.typ.startswith("aws:") or args.typ.startswith("pulumi:providers:"):
            resource_id, outputs = self._aws(args.typ, args.name, inputs)
        else:  # component resources
            resource_id, outputs = "", {}
        record = {
            "type": args.typ, "name": args.name, "custom": bool(args.custom), "provider": args.provider or "",
            "id": resource_id, "inputs": inputs, "secret_inputs": secret_inputs, "outputs": outputs,
            "urn": "", "parent": "", "dependencies": [], "aliases": [],
        }
        with self._lock:
            self.resources.append(record)
            self._unregistered.setdefault((args.typ, args.name), []).append(record)
        return resource_id, outputs

    def record_registration(
        self, type_: str, name: str, urn: str, parent: str, dependencies: Sequence[str] = (),
        aliases: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        with self._lock:
            waiting = self._unregistered.get((type_, name))
            if waiting:
                record = waiting.pop(0)
                record["urn"], record["parent"], record["dependencies"] = urn, parent, sorted(set(dependencies))
                record["aliases"] = list(aliases)

    def _arn(self, service: str, resource: str, *, regional: bool = True, in_account: bool = True) -> str:
        return f"arn:aws:{service}:{self.region if regional else ''}:{self.account_id if in_account else ''}:{resource}"

    def _aws(self, typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        outputs = dict(inputs)
        if typ in _AUTONAMED and not outputs.get(_AUTONAMED[typ]):
            outputs[_AUTONAMED[typ]] = f"{name}-{_digest(typ, name, length=7)}"
        resource_id = _ID_PREFIXES.get(typ, "") + _digest(typ, name)
        if typ.startswith("pulumi:providers:"):
            resource_id = str(uuid.UUID(_digest(typ, name, length=32)))
        elif typ == "aws:kms/key:Key":
            resource_id = str(uuid.UUID(_digest(typ, name, length=32)))
            outputs.update(keyId=resource_id, arn=self._arn("kms", f"key/{resource_id}"))
        elif typ == "aws:kms/alias:Alias":
            resource_id = outputs["name"]
            outputs["arn"] = self._arn("kms", outputs["name"])
        elif typ == "aws:s3/bucket:Bucket":
            resource_id = outputs["bucket"]
            outputs.update(arn=f"arn:aws:s3:::{resource_id}", region=self.region)
        elif typ.startswith("aws:s3/"):
            resource_id = outputs.get("bucket", resource_id)
        elif typ in ("aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile"):
            resource_id = outputs["name"]
            kind = "role" if typ.endswith("Role") else "instance-profile"
            outputs.update(arn=self._arn("iam", f"{kind}/{resource_id}", regional=False), uniqueId="AROA" + _digest(typ, name).upper())
        elif typ == "aws:iam/rolePolicy:RolePolicy":
            resource_id = f"{outputs['role']}:{outputs['name']}"
        elif typ == "aws:iam/policy:Policy":
            resource_id = self._arn("iam", f"policy/{outputs['name']}", regional=False)
            outputs.update(arn=resource_id, policyId="ANPA" + _digest(typ, name).upper())
        elif typ == "aws:secretsmanager/secret:Secret":
            resource_id = self._arn("secretsmanager", f"secret:{outputs['name']}-{_digest(typ, name, length=6)}")
            outputs["arn"] = resource_id
        elif typ == "aws:secretsmanager/secretVersion:SecretVersion":
            version = str(uuid.UUID(_digest(typ, name, length=32)))
            resource_id = f"{outputs['secretId']}|{version}"
            outputs.update(arn=outputs["secretId"], versionId=version)
        elif typ == "aws:ssm/parameter:Parameter":
            resource_id = outputs["name"]
            outputs.update(arn=self._arn("ssm", f"parameter{outputs['name']}"), version=1)
        elif typ == "aws:cloudwatch/logGroup:LogGroup":
            resource_id = outputs["name"]
            outputs["arn"] = self._arn("logs", f"log-group:{outputs['name']}")
        elif typ == "aws:route53/zone:Zone":
            resource_id = "Z" + _digest(typ, name, length=20).upper()
            outputs.update(zoneId=resource_id, arn=f"arn:aws:route53:::hostedzone/{resource_id}", nameServers=[])
        elif typ == "aws:autoscaling/group:Group":
            resource_id = outputs["name"]
            group_uuid = uuid.UUID(_digest(typ, name, length=32))
            outputs["arn"] = self._arn("autoscaling", f"autoScalingGroup:{group_uuid}:autoScalingGroupName/{resource_id}")
        elif typ == "aws:ec2/launchTemplate:LaunchTemplate":
            outputs.update(latestVersion=1, defaultVersion=1, arn=self._arn("ec2", f"launch-template/{resource_id}"))
        elif typ == "aws:ec2/vpcEndpoint:VpcEndpoint" and outputs.get("vpcEndpointType") == "Gateway":
            outputs["prefixListId"] = S3_PREFIX_LIST_ID
        elif typ == "aws:lambda/function:Function":
            resource_id = outputs["name"]
            arn = self._arn("lambda", f"function:{resource_id}")
            outputs.update(
                arn=arn, qualifiedArn=f"{arn}:$LATEST", version="$LATEST",
                invokeArn=f"arn:aws:apigateway:{self.region}:lambda:path/2015-03-31/functions/{arn}/invocations",
            )
        elif typ == "aws:lambda/permission:Permission":
            resource_id = outputs.setdefault("statementId", f"terraform-{_digest(typ, name, length=26)}")
        elif typ == "aws:cloudwatch/eventRule:EventRule":
            resource_id = outputs["name"]
            outputs["arn"] = self._arn("events", f"rule/{resource_id}")
        elif typ == "aws:cloudwatch/eventTarget:EventTarget":
            outputs.setdefault("targetId", f"terraform-{_digest(typ, name, length=26)}")
            resource_id = f"{outputs['rule']}-{outputs['targetId']}"
        elif typ == "aws:budgets/budget:Budget":
            resource_id = f"{self.account_id}:{outputs['name']}"
            outputs["arn"] = f"arn:aws:budgets::{self.account_id}:budget/{outputs['name']}"
        elif typ == "aws:budgets/budgetAction:BudgetAction":
            outputs["actionId"] = _digest(typ, name, length=36)
            resource_id = f"{self.account_id}:{outputs['actionId']}:{outputs['budgetName']}"
        elif typ.startswith("aws:ec2/") or typ.startswith("aws:vpc/"):
            outputs["arn"] = self._arn("ec2", f"{typ.rsplit(':', 1)[-1].lower()}/{resource_id}")
        return resource_id, outputs

    # --- invokes ---

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        with self._lock:
            self.calls.append({"token": args.token, "args": dict(args.args)})
        handler = getattr(self, "_call_" + args.token.rsplit(":", 1)[-1], None)
        if handler is None:
            raise NotImplementedError(f"ProgramMocks: no answer for invoke {args.token}")
        return handler(dict(args.args)), []

    def _call_getCallerIdentity(self, _: dict[str, Any]) -> dict[str, Any]:
        return {
            "accountId": self.account_id, "id": self.account_id, "userId": "AROAEXAMPLE:ci",
            "arn": f"arn:aws:sts::{self.account_id}:assumed-role/{DEPLOYER_ROLE}/ci",
        }

    def _call_getPartition(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"partition": "aws", "dnsSuffix": "amazonaws.com", "reverseDnsPrefix": "com.amazonaws", "id": "aws"}

    def _call_getSessionContext(self, args: dict[str, Any]) -> dict[str, Any]:
        arn = args["arn"]
        issuer = arn
        if ":assumed-role/" in arn:
            head, _, rest = arn.partition(":assumed-role/")
            issuer = head.replace(":sts:", ":iam:") + ":role/" + rest.split("/")[0]
        return {"arn": arn, "issuerArn": issuer, "issuerId": "AROAEXAMPLE", "issuerName": issuer.rsplit("/", 1)[-1],
                "sessionName": arn.rsplit("/", 1)[-1], "id": arn}

    def _call_getAvailabilityZones(self, _: dict[str, Any]) -> dict[str, Any]:
        names = [f"{self.region}{suffix}" for suffix in "abc"]
        return {"names": names, "zoneIds": [f"euw1-az{index}" for index in (1, 2, 3)], "id": self.region, "groupNames": names}

    def _call_getPrefixList(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("name") != f"com.amazonaws.{self.region}.s3":
            raise ValueError(f"no prefix list named {args.get('name')!r}")
        return {"id": S3_PREFIX_LIST_ID, "name": args["name"], "cidrBlocks": ["52.218.0.0/17"]}

    def _call_getVpc(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("id") not in self.vpcs:
            raise ValueError(f"no matching EC2 VPC found: {args.get('id')}")
        return {"id": args["id"], **self.vpcs[args["id"]]}

    def _call_getSubnet(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("id") not in self.subnets:
            raise ValueError(f"no matching EC2 Subnet found: {args.get('id')}")
        return {"id": args["id"], **self.subnets[args["id"]]}

    def _matching_images(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        owners = args.get("owners")
        found = []
        for image in self.images:
            if owners and "self" not in owners and image.get("owner", self.account_id) not in owners:
                continue
            if all(self._image_matches(image, flt["name"], flt["values"]) for flt in args.get("filters") or []):
                found.append(image)
        return found

    @staticmethod
    def _image_matches(image: Mapping[str, Any], name: str, values: Sequence[str]) -> bool:
        if name == "image-id":
            return image["id"] in values
        if name.startswith("tag:"):
            return image.get("tags", {}).get(name[4:]) in values
        raise ValueError(f"ProgramMocks: unsupported AMI filter {name!r}")

    def _call_getAmiIds(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("owners"):
            raise ValueError("getAmiIds: owners must name at least one owner")
        return {"ids": [image["id"] for image in self._matching_images(args)], "id": self.region}

    def _call_getAmi(self, args: dict[str, Any]) -> dict[str, Any]:
        found = self._matching_images(args)
        if not found:
            raise ValueError("Your query returned no results. Please change your search criteria and try again.")
        image = found[-1]
        return {
            "id": image["id"], "imageId": image["id"], "architecture": image.get("architecture", "x86_64"),
            "rootDeviceName": image.get("root_device_name", DEFAULT_ROOT_DEVICE), "rootDeviceType": "ebs",
            "tags": image.get("tags", {}), "ownerId": image.get("owner", self.account_id), "state": "available",
        }


class RecordingMonitor(MockMonitor):
    """Tells the mocks each resource's URN, parent, dependencies and aliases, which MockResourceArgs does not carry.

    URNs are the engine's: a child's type is its parent's whole type chain and its own (MockMonitor keeps
    only the parent's last type). Aliases are recorded as the SDK sends them (infra.urns turns them into
    the URNs the engine would carry a resource over from, inherited ones included).
    """

    mocks: ProgramMocks

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        if parent:
            chain = parent.split("::")[2]
            if chain != ROOT_STACK_TYPE:
                type_ = f"{chain}${type_}"
        return super().make_urn("", type_, name)

    def RegisterResource(self, request):  # noqa: N802 (the monitor's gRPC method name)
        response = super().RegisterResource(request)
        aliases = [_alias_record(alias) for alias in request.aliases] + [{"urn": urn} for urn in request.aliasURNs]
        self.mocks.record_registration(request.type, request.name, response.urn, request.parent, request.dependencies,
                                       aliases)
        return response


def _alias_record(alias: Any) -> dict[str, Any]:
    """An alias as the SDK sent it: a whole URN, or a spec whose empty fields mean "as the resource is now"."""
    if alias.HasField("urn") or not alias.HasField("spec"):
        return {"urn": alias.urn}
    spec = alias.spec
    return {"name": spec.name, "type": spec.type, "stack": spec.stack, "project": spec.project,
            "parent": spec.parentUrn if spec.HasField("parentUrn") else None,
            "no_parent": spec.noParent if spec.HasField("noParent") else False}


def json_safe(value: Any) -> Any:
    """Inputs and outputs as plain JSON values; assets and archives as {"asset"/"archive": kind, ...}."""
    if isinstance(value, (Asset, Archive)):
        return _asset_record(value)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.loads(json.dumps(value, default=str))


def _asset_record(value: Asset | Archive) -> dict[str, Any]:
    """What an asset or archive holds: its path, text or URI, or (AssetArchive) its members by name."""
    if isinstance(value, AssetArchive):
        return {"archive": "assets", "assets": {name: json_safe(item) for name, item in value.assets.items()}}
    kind = "archive" if isinstance(value, Archive) else "asset"
    for attribute in ("path", "text", "uri"):
        if isinstance(getattr(value, attribute, None), str):
            return {kind: attribute, attribute: getattr(value, attribute)}
    raise TypeError(f"ProgramMocks: cannot record {type(value).__name__}")
