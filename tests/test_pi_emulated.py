"""The pure logic of benchmarks/pi-emulated (cpuinfo, mirror, pip settings, comparison); not the emulation."""

import configparser
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / "benchmarks" / "pi-emulated"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"pi_emulated_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


pi_setup = load_script("pi_setup")
compare = load_script("compare_predictions")


def cpuinfo_fields(text: str) -> list[dict[str, str]]:
    """Parse /proc/cpuinfo the way Linux tools do: blank-line separated blocks of `key : value`."""
    blocks = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines())
        blocks.append({key.strip(): value.strip() for key, value in fields.items()})
    return blocks


@pytest.mark.parametrize(("core", "part"), [("cortex-a72", "0xd08"), ("cortex-a76", "0xd0b")])
def test_cpuinfo_describes_the_emulated_arm_core(core, part):
    blocks = cpuinfo_fields(pi_setup.make_cpuinfo(core, cpus=3))
    processors = [block for block in blocks if "processor" in block]
    assert [block["processor"] for block in processors] == ["0", "1", "2"]
    for block in processors:
        assert block["CPU implementer"] == "0x41"
        assert block["CPU part"] == part
        assert block["CPU architecture"] == "8"
        assert "asimd" in block["Features"].split()
    assert "x86" not in pi_setup.make_cpuinfo(core, cpus=1)


def test_cpuinfo_features_match_each_core():
    # The A76 (Pi 5) has the dot-product and atomics extensions; the A72 (Pi 4) does not.
    a72 = cpuinfo_fields(pi_setup.make_cpuinfo("cortex-a72", 1))[0]["Features"].split()
    a76 = cpuinfo_fields(pi_setup.make_cpuinfo("cortex-a76", 1))[0]["Features"].split()
    assert "asimddp" in a76 and "atomics" in a76
    assert "asimddp" not in a72 and "atomics" not in a72


@pytest.mark.parametrize(("core", "cpus"), [("cortex-a53", 4), ("pentium", 1), ("cortex-a72", 0)])
def test_cpuinfo_rejects_unknown_cores_and_counts(core, cpus):
    with pytest.raises(ValueError, match="got"):
        pi_setup.make_cpuinfo(core, cpus)


def test_hwcaps_decode_to_cpuinfo_feature_names():
    assert pi_setup.decode_hwcaps(0) == []
    assert pi_setup.decode_hwcaps(1 << 0 | 1 << 1 | 1 << 20) == ["fp", "asimd", "asimddp"]
    assert pi_setup.decode_hwcaps(1 << 8 | 1 << 40) == ["atomics", "bit40"]
    # Every feature the generated cpuinfo claims is one the kernel can report through AT_HWCAP.
    for core in pi_setup.CORES:
        features = cpuinfo_fields(pi_setup.make_cpuinfo(core, 1))[0]["Features"].split()
        assert set(features) <= set(pi_setup.HWCAP_NAMES)


DEB822 = """Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main

Types: deb
URIs: http://mirror.example.org/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example.org/debian
Suites: bookworm

Types: deb
URIs: http://mirror.example.org/debian/
Suites: bookworm bookworm-updates
Components: main
"""


def test_mirror_is_the_debian_archive_of_a_deb822_file():
    assert pi_setup.find_debian_mirror({"debian.sources": DEB822}) == "http://mirror.example.org/debian"


def test_mirror_from_one_line_sources_with_options_and_comments():
    text = ("# deb http://old.example.org/debian bookworm main\n"
            "deb [arch=amd64] https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n"
            "deb [signed-by=/usr/share/keyrings/k.gpg] http://ftp.example.de/debian bookworm main contrib\n")
    assert pi_setup.find_debian_mirror({"sources.list": text}) == "http://ftp.example.de/debian"


def test_mirror_ignores_files_apt_ignores_and_falls_back():
    disabled = "deb http://disabled.example.org/debian bookworm main\n"
    assert pi_setup.find_debian_mirror({"x.list.disabled": disabled}) == pi_setup.DEFAULT_MIRROR
    security_only = "deb http://security.debian.org/debian-security bookworm-security main\n"
    assert pi_setup.find_debian_mirror({"sources.list": security_only}) == pi_setup.DEFAULT_MIRROR


HOST_PIP_LIST = """:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.find-links='/opt/wheels'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple https://mirror.example.org/simple file:///opt/more/simple'
global.timeout='60'
"""


def test_pip_settings_keep_what_the_rootfs_can_use(tmp_path):
    (tmp_path / "etc/ssl/certs").mkdir(parents=True)
    (tmp_path / "etc/ssl/certs/ca-certificates.crt").write_text("bundle")
    settings = pi_setup.parse_pip_config(HOST_PIP_LIST, {"PIP_DEFAULT_TIMEOUT": "180", "HOME": "/root"})
    kept, dropped = pi_setup.settings_for_rootfs(settings, tmp_path)
    assert kept == {"cert": "/etc/ssl/certs/ca-certificates.crt", "extra-index-url": "https://mirror.example.org/simple",
                    "timeout": "60", "default-timeout": "180"}
    assert len(dropped) == 4  # find-links, constraint, two file:// indexes
    parser = configparser.ConfigParser()
    parser.read_string(pi_setup.render_pip_conf(kept, dropped))
    assert dict(parser["global"]) == kept


def test_pip_cert_dropped_when_the_bundle_was_not_copied(tmp_path):
    kept, dropped = pi_setup.settings_for_rootfs({"cert": "/etc/ssl/private-ca.pem"}, tmp_path)
    assert kept == {} and "cert=/etc/ssl/private-ca.pem" in dropped[0]


def test_pip_environment_overrides_config_file():
    settings = pi_setup.parse_pip_config("global.index-url='https://a.example/simple'\n",
                                         {"PIP_INDEX_URL": "https://b.example/simple"})
    assert settings == {"index-url": "https://b.example/simple"}


def test_pick_evenly_spreads_over_the_sorted_list():
    names = [f"{label}/{index:02d}.jpg" for label in ("Pro", "Benign", "Pre", "Early") for index in range(10)]
    picked = pi_setup.pick_evenly(names, 4)
    assert [name.split("/")[0] for name in picked] == ["Benign", "Early", "Pre", "Pro"]
    assert pi_setup.pick_evenly(names[:3], 8) == sorted(names[:3])
    with pytest.raises(ValueError):
        pi_setup.pick_evenly(names, 0)


def test_list_images_uses_allx_notion_of_an_image(tmp_path):
    (tmp_path / "Pre").mkdir()
    for name in ("Pre/a.JPG", "Pre/b.png", "Pre/notes.txt", "Pre/.hidden.jpg"):
        (tmp_path / name).write_bytes(b"x")
    assert sorted(pi_setup.list_images(tmp_path)) == ["Pre/a.JPG", "Pre/b.png"]


def test_wheel_tags_name_the_installed_wheel():
    numpy_line, missing_line = pi_setup.describe_wheels(["numpy", "no-such-distribution-allx"])
    name, version, tags = numpy_line.split(" ")
    import numpy

    assert (name, version) == ("numpy", numpy.__version__)
    assert all(tag.count("-") == 2 for tag in tags.split(","))
    assert missing_line == "no-such-distribution-allx not installed"


def jsonl(records) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def record(path, score, latency=1.0):
    return {"path": path, "label": "Pre", "score": score, "top_k": [{"label": "Pre", "score": score}],
            "latency_ms": latency}


def test_comparison_matches_by_relative_path_and_ignores_timing():
    first = compare.parse_lines(jsonl([record("/host/img/Pre/a.jpg", 0.5, 0.2)]), "/host/img", "x86")
    second = compare.parse_lines(jsonl([record("/opt/p/images/Pre/a.jpg", 0.5, 93.0)]), "/opt/p/images", "arm")
    result = compare.compare_records(first, second)
    assert result.equal and result.matched == ("Pre/a.jpg",)


def test_comparison_sees_a_one_bit_difference():
    value = 0.1
    next_value = 0.10000000000000002  # the next float64 after 0.1
    assert value != next_value
    first = compare.parse_lines(jsonl([record("a.jpg", value), record("b.jpg", 0.3)]), "", "x86")
    second = compare.parse_lines(jsonl([record("a.jpg", next_value), record("b.jpg", 0.3)]), "", "arm")
    result = compare.compare_records(first, second)
    assert not result.equal
    assert result.differing == ("a.jpg",) and result.matched == ("b.jpg",)


def test_comparison_reports_missing_images_and_empty_runs():
    first = compare.parse_lines(jsonl([record("a.jpg", 0.5), record("b.jpg", 0.5)]), "", "x86")
    second = compare.parse_lines(jsonl([record("a.jpg", 0.5), {"path": "c.jpg", "error": "truncated"}]), "", "arm")
    result = compare.compare_records(first, second)
    assert (result.only_first, result.only_second) == (("b.jpg",), ("c.jpg",))
    assert not result.equal
    assert not compare.compare_records({}, {}).equal


@pytest.mark.parametrize("line", ["not json", "[1, 2]", '{"label": "Pre"}'])
def test_comparison_rejects_malformed_lines(line):
    with pytest.raises(ValueError, match="x86:2"):
        compare.parse_lines(jsonl([record("a.jpg", 0.5)]) + line + "\n", "", "x86")


def test_compare_script_exit_codes(tmp_path):
    same, other, broken = tmp_path / "same.jsonl", tmp_path / "other.jsonl", tmp_path / "broken.jsonl"
    same.write_text(jsonl([record("a.jpg", 0.25)]))
    other.write_text(jsonl([record("a.jpg", 0.75)]))
    broken.write_text("{")
    assert compare.main([str(same), str(same)]) == 0
    assert compare.main([str(same), str(other)]) == 1
    assert compare.main([str(same), str(broken)]) == 2


@pytest.mark.parametrize(("args", "code", "message"), [
    ([], 2, "Usage"),
    (["/nonexistent/model.tflite", "/tmp"], 1, "got model /nonexistent/model.tflite"),
])
def test_run_script_checks_arguments_before_touching_the_system(args, code, message):
    # Argument checks come before any apt, mount or binfmt change, so this is safe to run anywhere.
    result = subprocess.run(["bash", str(HERE / "run.sh"), *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == code
    assert message in result.stderr
