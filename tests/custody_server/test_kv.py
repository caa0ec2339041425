"""``hvac``'s ``secrets.kv.v2`` runs unchanged against ``custody serve``: create, read,
update with check-and-set, versions, metadata, list, delete, undelete and destroy."""

from __future__ import annotations

import hvac
import hvac.exceptions
import pytest

from tests.server_fixtures import Server, audit_entries, make_pki, server_home

pytestmark = [pytest.mark.hsm, pytest.mark.xdist_group("custody-serve-kv")]
PEOPLE = {
    "kv-root": ("super-admin", ()),
    "kv-admin": ("service-admin", ("payments",)),
    "kv-reader": ("service-user", ("payments",)),
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-kv")
    home, pins, tokens, env = server_home(root, PEOPLE)
    pki = make_pki(root / "pki")
    s = Server(home, pins, pki, env=env)
    s.tokens = tokens
    yield s
    s.stop()


def vault(s, who: str) -> hvac.Client:
    if who in s.tokens:
        return hvac.Client(url=s.url, token=s.tokens[who], verify=str(s.pki.ca))
    # a person: mutual TLS with a certificate of the custody CA (hvac's own cert= option)
    return hvac.Client(url=s.url, verify=str(s.pki.ca), cert=s.pki.client(who))


def test_hvac_kv_v2_lifecycle(srv):
    kv = vault(srv, "kv-admin").secrets.kv.v2
    m = "prod"
    # create (cas=0: must not exist), then update with the version we saw
    made = kv.create_or_update_secret(
        "payments/cfg", {"host": "db1", "port": "5432"}, cas=0, mount_point=m
    )
    assert made["data"]["version"] == 1
    with pytest.raises(hvac.exceptions.InvalidRequest):
        kv.create_or_update_secret("payments/cfg", {"host": "db2"}, cas=0, mount_point=m)
    kv.create_or_update_secret(
        "payments/cfg", {"host": "db2", "port": "5432"}, cas=1, mount_point=m
    )
    kv.create_or_update_secret("payments/cfg", {"host": "db3", "port": "5432"}, mount_point=m)
    got = kv.read_secret_version("payments/cfg", mount_point=m, raise_on_deleted_version=True)
    assert got["data"]["data"] == {"host": "db3", "port": "5432"}
    assert got["data"]["metadata"]["version"] == 3
    old = kv.read_secret_version(
        "payments/cfg", version=2, mount_point=m, raise_on_deleted_version=True
    )
    assert old["data"]["data"]["host"] == "db2"
    # metadata and list
    meta = kv.read_secret_metadata("payments/cfg", mount_point=m)["data"]
    assert meta["current_version"] == 3 and set(meta["versions"]) == {"1", "2", "3"}
    assert meta["custom_metadata"]["category"] == "configuration-secret"
    kv.create_or_update_secret("payments/stripe/key", {"value": "sk-not-real"}, mount_point=m)
    assert kv.list_secrets("payments", mount_point=m)["data"]["keys"] == ["cfg", "stripe/"]
    assert kv.list_secrets("payments/stripe", mount_point=m)["data"]["keys"] == ["key"]
    # destroying is a super-admin's: the service-admin is refused, the person (over mTLS)
    # destroys an old, unlabelled version; a labelled one is refused even to them
    with pytest.raises(hvac.exceptions.Forbidden):
        kv.destroy_secret_versions("payments/cfg", versions=[1], mount_point=m)
    root = vault(srv, "kv-root").secrets.kv.v2
    root.destroy_secret_versions("payments/cfg", versions=[1], mount_point=m)
    meta = kv.read_secret_metadata("payments/cfg", mount_point=m)["data"]
    assert (
        meta["versions"]["1"]["destroyed"] is True and meta["versions"]["3"]["destroyed"] is False
    )
    with pytest.raises(hvac.exceptions.Forbidden):
        root.destroy_secret_versions("payments/cfg", versions=[3], mount_point=m)
    # delete the latest version: reads refused; undelete brings it back
    kv.delete_latest_version_of_secret("payments/cfg", mount_point=m)
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version("payments/cfg", mount_point=m, raise_on_deleted_version=True)
    gone = kv.read_secret_version("payments/cfg", mount_point=m, raise_on_deleted_version=False)
    assert gone["data"]["metadata"]["deletion_time"] != ""
    kv.undelete_secret_versions("payments/cfg", versions=[3], mount_point=m)
    back = kv.read_secret_version("payments/cfg", mount_point=m, raise_on_deleted_version=True)
    assert back["data"]["data"]["host"] == "db3"
    ops = [
        (e["op"], e["outcome"])
        for e in audit_entries(srv.home)
        if e["target"] == "prod:payments/cfg"
    ]
    for op in ("secret put", "secret delete", "secret restore", "secret destroy"):
        assert (op, "intent") in ops and (op, "ok") in ops
    assert ("secret get", "ok") in ops


def test_environments_are_mounts_and_a_reader_without_a_grant_gets_nothing(srv):
    admin = vault(srv, "kv-admin").secrets.kv.v2
    admin.create_or_update_secret(
        "payments/token", {"value": "staging-only"}, mount_point="staging"
    )
    got = admin.read_secret_version(
        "payments/token", mount_point="staging", raise_on_deleted_version=True
    )
    assert got["data"]["data"] == {"value": "staging-only"}
    with pytest.raises(hvac.exceptions.InvalidPath):  # environments never share secrets
        admin.read_secret_version(
            "payments/token", mount_point="prod", raise_on_deleted_version=True
        )
    kv = vault(srv, "kv-reader").secrets.kv.v2
    with pytest.raises(hvac.exceptions.Forbidden):  # a service-user reads only with a grant
        kv.read_secret_version(
            "payments/token", mount_point="staging", raise_on_deleted_version=True
        )
    with pytest.raises(hvac.exceptions.Forbidden):
        kv.create_or_update_secret("payments/token", {"value": "x" * 20}, mount_point="staging")
    with pytest.raises(hvac.exceptions.InvalidPath):  # it may list nothing either
        kv.list_secrets("payments", mount_point="staging")
    with pytest.raises(hvac.exceptions.Forbidden):
        kv.delete_latest_version_of_secret("payments/token", mount_point="staging")
    assert admin.read_secret_version(
        "payments/token", mount_point="staging", raise_on_deleted_version=True
    )["data"]["data"] == {"value": "staging-only"}
