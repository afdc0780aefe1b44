"""Device config: real TOML files → typed models; every problem named with its path and a fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from runtime_support import config_text

from edge.backends import BACKENDS
from edge.config import (
    FolderSourceConfig,
    OpenCVSourceConfig,
    ScorerConfig,
    load_config,
)
from edge.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def runtime_write(tmp_path: Path, runtime_bundle: Path):
    def write(text: str | None = None, **kwargs: str) -> Path:
        path = tmp_path / "device.toml"
        path.write_text(text if text is not None
                        else config_text(runtime_bundle, "frames", **kwargs), encoding="utf-8")
        return path
    return write


def problems_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


def test_valid_config_loads_with_defaults_and_resolves_paths(runtime_write, tmp_path, monkeypatch):
    path = runtime_write()
    monkeypatch.chdir("/")  # relative paths must not depend on the working directory
    config = load_config(path)
    assert config.device_id == "line-1"
    assert isinstance(config.source, FolderSourceConfig)
    assert config.source.path == tmp_path / "frames"
    assert config.decision.k == 1 and config.decision.n == 1 and config.decision.clear_ratio == 1
    assert config.mqtt.port == 1883 and config.mqtt.stats_interval_s == 10.0
    assert config.logging.level == "INFO"
    assert config.layout.crop_names() == ["r0c0", "r0c1", "r0c2", "r1c0", "r1c1", "r1c2"]
    assert config.base_dir == tmp_path


def test_relative_bundle_resolves_against_config_folder(tmp_path, runtime_bundle, monkeypatch):
    config_dir = runtime_bundle.parent / "firmware"
    config_dir.mkdir(exist_ok=True)
    path = config_dir / "device.toml"
    path.write_text(config_text(f"../{runtime_bundle.name}", "frames"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_config(path).bundle.resolve() == runtime_bundle.resolve()


def test_unknown_nested_key_names_its_path_and_suggests_the_key(runtime_write):
    message = problems_of(runtime_write(layout_extra="rowz = 4"))
    assert "layout.grid.rowz: unknown key" in message
    assert "did you mean 'rows'?" in message


def test_unknown_key_in_source_lists_the_keys_of_that_kind(runtime_write, tmp_path):
    text = config_text(tmp_path, "x").replace('kind = "folder"\npath = "x"',
                                               'kind = "opencv"\nindex = 0\nbogus_key = 1')
    message = problems_of(runtime_write(text))
    assert "source.bogus_key: unknown key" in message
    assert "url_env" in message  # a key of the opencv source, not of the folder one


def test_unknown_key_in_a_per_crop_override(runtime_write):
    message = problems_of(runtime_write(decision='[decision.crops.r0c0]\nhigh = 0.1\n'
                                                 'reason = "glare"\nhihg = 2'))
    assert "decision.crops.r0c0.hihg: unknown key" in message


def test_all_problems_are_reported_at_once(runtime_write):
    text = config_text("does-not-exist", "frames", layout_extra="rowz = 4",
                       decision="k = 0", mqtt="port = 70000")
    message = problems_of(runtime_write(text))
    assert "has 4 problems" in message
    for where in ("bundle: no bundle at", "layout.grid.rowz: unknown key", "decision.k:",
                  "mqtt.port:"):
        assert where in message
    assert "found 70000" in message


def test_out_of_range_value_says_what_was_found(runtime_write):
    text = runtime_write().read_text().replace("num_threads = 1", "num_threads = 0")
    message = problems_of(runtime_write(text))
    assert 'scorer.num_threads: must be "auto" or a whole number from 1 to 64 (found 0)' in message


def test_missing_bundle_is_a_clear_error(runtime_write, tmp_path):
    message = problems_of(runtime_write(config_text("../nowhere/bundle", "frames")))
    assert "bundle: no bundle at" in message and "nowhere" in message
    assert "trainer fit" in message


def test_missing_required_keys(runtime_write):
    message = problems_of(runtime_write('bundle = "."\n[layout.grid]\nregion=[0,0,10,10]\n'))
    for where in ("device_id: required key is missing", "source: required key is missing",
                  "layout.grid.rows: required key is missing"):
        assert where in message


def test_bad_toml_and_missing_file(runtime_write, tmp_path):
    message = problems_of(runtime_write("device_id = \n"))
    assert "not valid TOML" in message and "line 1" in message
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_unknown_source_kind(runtime_write):
    text = runtime_write().read_text().replace('kind = "folder"', 'kind = "webcam"')
    message = problems_of(runtime_write(text))
    assert "source.kind: must be one of folder, opencv, picamera2 (found 'webcam')" in message


@pytest.mark.parametrize("url", ["rtsp://cam:hunter22@10.0.0.5/stream",
                                 "rtsp://10.0.0.5/stream?token=hunter22"])
def test_rtsp_secret_in_toml_is_refused_without_echoing_it(runtime_write, url):
    text = runtime_write().read_text().replace(
        'kind = "folder"\npath = "frames"', f'kind = "opencv"\nurl = "{url}"')
    message = problems_of(runtime_write(text))
    assert "url_env" in message
    assert "hunter22" not in message


def test_threshold_override_needs_a_reason_and_a_bound(runtime_write):
    message = problems_of(runtime_write(decision="[decision.threshold]\nhigh = 0.01"))
    assert "decision.threshold.reason: required key is missing" in message
    message = problems_of(runtime_write(decision='[decision.threshold]\nreason = "new lens"'))
    assert "decision.threshold: a threshold override needs 'high', 'low' or both" in message


def test_override_for_an_unknown_crop(runtime_write):
    message = problems_of(runtime_write(decision='[decision.crops.r9c9]\nhigh = 0.1\n'
                                                 'reason = "glare"'))
    assert "decision.crops: names ['r9c9'], which are not crops of the layout" in message


def test_k_cannot_exceed_n(runtime_write):
    assert "k (3) cannot exceed n (2)" in problems_of(runtime_write(decision="k = 3\nn = 2"))


def test_grid_with_no_room_for_cells(runtime_write):
    message = problems_of(runtime_write(layout_extra="gap = [30, 0]"))
    assert "layout.grid:" in message and "enlarge the region" in message


def test_name_template_must_give_topic_safe_names(runtime_write):
    message = problems_of(runtime_write(layout_extra='name_template = "well/{index}"'))
    assert "layout.grid: name_template 'well/{index}'" in message


@pytest.mark.parametrize(("template", "found"), [
    ("r{row}c{col}{}", "{}"), ("r{row}c{col}{0}", "{0}"), ("r{row}{col.real}", "{col.real}")])
def test_name_template_with_a_field_no_value_fills_is_a_config_error(runtime_write, template,
                                                                     found):
    text = problems_of(runtime_write(layout_extra=f'name_template = "{template}"'))
    assert "name_template" in text and found in text


def test_name_template_with_a_string_format_spec_is_a_config_error(runtime_write):
    text = problems_of(runtime_write(layout_extra='name_template = "r{row:s}c{col}"'))
    assert "cannot be filled in" in text


def test_picamera2_lores_larger_than_main_is_refused(runtime_write, runtime_bundle):
    camera = 'kind = "picamera2"\nmain_size = [320, 240]\nlores_size = [640, 480]'
    text = problems_of(runtime_write(config_text(runtime_bundle, "frames").replace(
        'kind = "folder"\npath = "frames"', camera)))
    assert "lores_size [640, 480] is larger than main_size [320, 240]" in text


@pytest.mark.parametrize("host", ["broker..local", "", "  ", "a" * 64 + ".plant"])
def test_a_broker_host_no_resolver_can_take_is_a_config_error(runtime_write, host):
    # paho would raise UnicodeError on its network thread and die there, silently.
    path = runtime_write()
    path.write_text(path.read_text().replace('host = "127.0.0.1"', f'host = "{host}"'))
    text = problems_of(path)
    assert "mqtt.host" in text and "is not a host name or IP address" in text


def test_opencv_needs_exactly_one_input(runtime_write):
    text = runtime_write().read_text().replace('kind = "folder"\npath = "frames"',
                                               'kind = "opencv"\nindex = 0\nurl = "rtsp://x/y"')
    assert "set exactly one of path, index, url, url_env" in problems_of(runtime_write(text))


def test_backend_names_match_the_backend_registry():
    backend_field = ScorerConfig.model_fields["backend"]
    assert set(backend_field.annotation.__args__) == set(BACKENDS)
    assert OpenCVSourceConfig.model_fields["fps"].default == 0.0


@pytest.mark.parametrize("name", ["demo-line.toml", "pi-reference.toml"])
def test_shipped_configs_are_valid(name, tmp_path, runtime_bundle):
    """The shipped files, with the bundle pointed at the test bundle (models/ may be empty)."""
    source = REPO / "firmware_config" / name
    raw = tomllib.loads(source.read_text(encoding="utf-8"))
    assert raw["device_id"]
    text = source.read_text(encoding="utf-8").replace(f'bundle = "{raw["bundle"]}"',
                                                      f'bundle = "{runtime_bundle}"')
    copy = tmp_path / name
    copy.write_text(text, encoding="utf-8")
    config = load_config(copy)
    assert config.source.kind == ("folder" if name == "demo-line.toml" else "picamera2")


def test_a_password_written_into_the_toml_is_refused_and_not_echoed(runtime_write):
    message = problems_of(runtime_write(mqtt='[mqtt.auth]\nusername_env = "U"\n'
                                             'password = "hunter2-secret"'))
    assert "mqtt.auth.password: unknown key" in message
    assert "Secrets never go in the TOML" in message and "password_env" in message
    assert "hunter2-secret" not in message


def test_a_box_without_area_is_refused_with_its_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Review finding: [5, 5, 0, 10] passed validation and was scored as a black crop for ever."""
    from edge.config import load_config
    from edge.errors import ConfigError

    path = tmp_path / "device.toml"
    path.write_text(f'device_id = "d"\nbundle = "{tmp_path}"\n[source]\nkind = "folder"\n'
                    f'path = "{tmp_path}"\n[[layout.boxes]]\nname = "thin"\nbox = [5, 5, 0, 10]\n')
    with pytest.raises(ConfigError, match=r"layout\.boxes.*zero width or height"):
        load_config(path)


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 1), (4, 3), (8, 4), (64, 4)])
def test_auto_threads_leave_a_core_for_capture_and_mqtt(monkeypatch, cores, expected):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
    assert ScorerConfig().num_threads == "auto"
    assert ScorerConfig().threads() == expected
    assert ScorerConfig(num_threads=6).threads() == 6  # a number is taken as given


def test_num_threads_auto_and_numbers_in_toml(runtime_write):
    for value, expected in (('"auto"', "auto"), ("3", 3)):
        text = re.sub(r"num_threads = \S+", f"num_threads = {value}", runtime_write().read_text())
        assert load_config(runtime_write(text)).scorer.num_threads == expected
    text = runtime_write().read_text().replace("num_threads = 1", 'num_threads = "all"')
    assert "(found 'all')" in problems_of(runtime_write(text))
