"""Peer expiry and renewed certificates on the scheduler (pure, and the guard with stand-in connections)."""

from __future__ import annotations

import asyncio
import datetime as dt
from types import SimpleNamespace
from unittest import mock

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from daskfleet.trust import pki
from daskfleet.trust.audit import AuditLog
from daskfleet.trust.gatekeeper import Gatekeeper
from daskfleet.trust.guards import SchedulerGuard
from daskfleet.trust.liveness import LivePeer, renewal_check
from daskfleet.trust.peers import Peer, parse_not_after

CLUSTER = "local"


def _now() -> dt.datetime:
    """Now, read by each test (a module-level constant is from collection, minutes earlier under xdist)."""
    return dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
def ca():
    return pki.create_ca(CLUSTER)


def _key(issued: pki.IssuedCert):
    return serialization.load_pem_private_key(issued.key_pem.encode(), password=None)


def _der(issued: pki.IssuedCert) -> bytes:
    return x509.load_pem_x509_certificate(issued.cert_pem.encode()).public_bytes(serialization.Encoding.DER)


def _public(issued: pki.IssuedCert) -> bytes:
    return LivePeer(None, Peer(None, None, ""), "connection", None, _der(issued)).public_key()


def reissue(ca, issued: pki.IssuedCert, role="client", user="alice", cluster=CLUSTER, **kwargs) -> pki.IssuedCert:
    """A certificate for the same key as ``issued`` (what a renewal's CSR gets)."""
    with mock.patch.object(pki, "_new_key", return_value=_key(issued)):
        return pki.issue_certificate(ca, cluster, role, user=user if role in ("client", "admin") else None, **kwargs)


def alice_peer(issued: pki.IssuedCert) -> Peer:
    not_after = x509.load_pem_x509_certificate(issued.cert_pem.encode()).not_valid_after_utc
    return Peer(CLUSTER, "client", "alice", "tls://127.0.0.1:40000", not_after)


def test_not_after_from_getpeercert():
    assert parse_not_after("Dec  2 17:00:00 2026 GMT") == dt.datetime(2026, 12, 2, 17, 0, tzinfo=dt.timezone.utc)
    assert parse_not_after(None) is None


def test_a_renewal_for_the_same_key_and_identity_is_accepted(ca):
    NOW = _now()
    first = pki.issue_certificate(ca, CLUSTER, "client", user="alice", valid_hours=1)
    renewed = reissue(ca, first, valid_hours=12)
    refusal, not_after = renewal_check(ca.cert_pem, CLUSTER, alice_peer(first), _public(first), renewed.cert_pem, NOW)
    assert refusal is None and not_after > NOW + dt.timedelta(hours=11)


def test_renewals_that_do_not_belong_to_the_session_are_refused(ca, other_ca):
    NOW = _now()
    first = pki.issue_certificate(ca, CLUSTER, "client", user="alice")
    peer, key = alice_peer(first), _public(first)
    cases = {
        "another key": (pki.issue_certificate(ca, CLUSTER, "client", user="alice").cert_pem, "for another key"),
        "another CA": (reissue(other_ca, first).cert_pem, "not issued by the CA of cluster 'local'"),
        "another user": (reissue(ca, first, user="bob").cert_pem, "names bob as client of 'local', the connection's alice"),
        "another role": (reissue(ca, first, role="admin").cert_pem, "names alice as admin"),
        "expired": (reissue(ca, first, valid_hours=1, not_before=NOW - dt.timedelta(hours=2)).cert_pem, "not valid now"),
        "not PEM": ("junk", "not a PEM certificate"),
    }
    for case, (cert_pem, reason) in cases.items():
        refusal, not_after = renewal_check(ca.cert_pem, CLUSTER, peer, key, cert_pem, NOW)
        assert refusal is not None and reason in refusal.reason, case
        assert not_after is None


class FakeComm:
    """What the guard reads of a connection: its verified peer, the certificate it presented, closing."""

    def __init__(self, issued: pki.IssuedCert, peer: Peer):
        self._daskfleet_peer = peer
        self.peer_address = peer.address
        der = _der(issued)
        self.stream = SimpleNamespace(socket=SimpleNamespace(getpeercert=lambda binary_form=False: der))
        self.aborted = False

    def abort(self):
        self.aborted = True

    def closed(self):
        return self.aborted


def _guard(ca, tmp_path) -> SchedulerGuard:
    gatekeeper = Gatekeeper(cluster=CLUSTER, expected_fingerprint="sha256:" + "0" * 64, versions={})
    guard = SchedulerGuard(gatekeeper, AuditLog(tmp_path / "audit.jsonl"), ca_pem=ca.cert_pem)
    guard.scheduler = SimpleNamespace(client_comms={}, clients={})
    return guard


def test_renewed_extends_every_live_connection_of_the_key_and_the_sweep_spares_them(ca, tmp_path):
    NOW = _now()
    guard = _guard(ca, tmp_path)
    first = pki.issue_certificate(ca, CLUSTER, "client", user="alice", valid_hours=1)
    peer = alice_peer(first)
    stream, rpc = FakeComm(first, peer), FakeComm(first, peer)
    other = pki.issue_certificate(ca, CLUSTER, "client", user="alice", valid_hours=1)  # alice elsewhere, another key
    elsewhere = FakeComm(other, alice_peer(other))
    for name, comm in (("client-1", stream), ("rpc", rpc), ("client-2", elsewhere)):
        guard.live[name] = LivePeer(comm, comm._daskfleet_peer, "connection", comm._daskfleet_peer.not_after,
                                    comm.stream.socket.getpeercert(True))

    assert guard.renewed(rpc, reissue(ca, first, valid_hours=12).cert_pem) is None
    later = NOW + dt.timedelta(hours=2)
    assert guard.live["client-1"].valid_until > later and guard.live["rpc"].valid_until > later
    closed = asyncio.run(guard.sweep_expired(later))
    assert closed == ["client-2"] and elsewhere.aborted and not stream.aborted
    assert '"event": "certificate-renewed"' in (tmp_path / "audit.jsonl").read_text()

    refusal = guard.renewed(rpc, reissue(ca, first, user="bob").cert_pem)
    assert refusal is not None and "names bob" in refusal.reason
