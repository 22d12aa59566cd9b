"""params.yaml survives the rewrites DVC and the history replay make of it (`dvc exp run -S`)."""
import shutil

import yaml

from conftest import REPO
from scripts.tools.replay_history import params_up_to, release_names


def test_dvc_set_param_round_trip_keeps_every_value(tmp_path):
    # `dvc exp run -S k=v` rewrites params.yaml with ruamel; flow mappings holding regexes such as
    # \d+:\d+ used to come back unquoted and unreadable by PyYAML, breaking every stage.
    from dvc.utils.serialize import modify_yaml

    copy = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", copy)
    with modify_yaml(copy) as data:
        data["dedup"]["threshold"] = 0.8
    before = yaml.safe_load((REPO / "params.yaml").read_text())
    after = yaml.safe_load(copy.read_text())
    assert after["dedup"]["threshold"] == 0.8
    after["dedup"]["threshold"] = before["dedup"]["threshold"]
    assert after == before


def test_history_replay_params_keep_values_and_drop_later_releases():
    text = (REPO / "params.yaml").read_text()
    names = release_names(text)
    assert names == ["v2", "v3", "v4-a", "v4-b"]
    for i, name in enumerate(names):
        cut = yaml.safe_load(params_up_to(text, name))
        full = yaml.safe_load(text)
        assert list(cut["releases"]) == names[: i + 1]
        assert {k: v for k, v in cut.items() if k != "releases"} == {k: v for k, v in full.items() if k != "releases"}
