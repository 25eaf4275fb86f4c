"""doctor's PipeWire and systemd-unit checks, on pw-dump output and unit folders made here."""

from __future__ import annotations

import json

from privacycam.doctor import check_systemd_unit, pipewire_check


def _node(path: str) -> dict:
    return {
        "id": 57,
        "type": "PipeWire:Interface:Node",
        "info": {
            "props": {"object.path": f"v4l2:{path}", "media.class": "Video/Source", "node.description": "PrivacyCam"}
        },
    }


def test_pipewire_node_for_the_device_is_ok():
    dump = json.dumps([{"id": 0, "type": "PipeWire:Interface:Core", "info": {}}, _node("/dev/video10")])
    check = pipewire_check("/dev/video10", dump)
    assert check.status == "OK" and "PrivacyCam" in check.what


def test_no_pipewire_node_says_how_to_fix_it():
    check = pipewire_check("/dev/video10", json.dumps([_node("/dev/video0")]))
    assert check.status == "WARN"
    assert "PipeWire has no node for /dev/video10" in check.what
    assert "systemctl --user restart wireplumber" in check.fix and "wireplumber-after-privacycam.conf" in check.fix


def test_unit_check_knows_the_app_id_unit_and_the_old_name(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    folder = tmp_path / "systemd" / "user"
    folder.mkdir(parents=True)
    assert "app-io.github.privacycam.PrivacyCam.service" in check_systemd_unit().fix
    (folder / "privacycam.service").write_text("[Service]\n")
    old = check_systemd_unit()
    assert old.status == "WARN" and "old systemd user unit" in old.what
    (folder / "privacycam.service").unlink()
    (folder / "app-io.github.privacycam.PrivacyCam.service").write_text("[Service]\n")
    (folder / "privacycam.service").symlink_to(folder / "app-io.github.privacycam.PrivacyCam.service")  # the Alias
    assert check_systemd_unit().status == "OK"
