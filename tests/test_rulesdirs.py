"""Rules directories as Kubernetes mounts a ConfigMap: each file read once by its visible path, hidden
paths skipped, and an update (the kubelet's atomic swap) seen by the fingerprint and loaded whole."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.configmap import ConfigMapVolume
from worker.actions.secrets import Placeholders
from worker.errors import Problem, RulesError
from worker.rulefiles.directories import Fingerprint, RulesWatch, fingerprint, paths_of
from worker.rulefiles.loading import load_rules, load_rules_of

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def rules(*names: str) -> str:
    return "rules:\n" + "".join(f"  - name: {name}\n    actions: [{{type: log}}]\n" for name in names)


def names(root: Path) -> list[str]:
    return [rule.name for rule in load_rules_of([root]).rules]


def test_a_configmap_volume_is_read_once_by_its_visible_paths(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "rules", {"rules.yaml": rules("a", "b"), "more.yml": rules("c")})
    assert (volume.root / "..data").is_symlink()
    assert len(volume.hidden()) == 1
    assert paths_of([volume.root]) == [volume.root / "more.yml", volume.root / "rules.yaml"]
    table = load_rules_of([volume.root])
    assert [rule.name for rule in table.rules] == ["c", "a", "b"]
    assert [rule.source for rule in table.rules] == [
        f"{volume.root / 'more.yml'}:2",
        f"{volume.root / 'rules.yaml'}:2",
        f"{volume.root / 'rules.yaml'}:4",
    ]


def test_the_shipped_configmap_loads_where_the_deployment_mounts_it(tmp_path: Path) -> None:
    configmap = yaml.safe_load((DEPLOY / "rules-configmap.yaml").read_text())
    deployment = yaml.safe_load((DEPLOY / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    volume_name = next(
        v["name"] for v in pod["volumes"] if v.get("configMap", {}).get("name") == configmap["metadata"]["name"]
    )
    container = pod["containers"][0]
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume_name)
    assert next(e["value"] for e in container["env"] if e["name"] == "WORKER_RULES") == mount
    volume = ConfigMapVolume(tmp_path / mount.lstrip("/"), configmap["data"])
    table = load_rules_of([volume.root])
    shipped = [rule["name"] for text in configmap["data"].values() for rule in yaml.safe_load(text)["rules"]]
    assert [rule.name for rule in table.rules] == shipped
    assert all(rule.source.startswith(f"{volume.root}/rules.yaml:") for rule in table.rules)


def test_a_rule_defined_twice_in_a_configmap_is_named_by_its_visible_paths(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "rules", {"a.yaml": rules("x"), "b.yaml": rules("y", "x")})
    with pytest.raises(RulesError) as caught:
        load_rules_of([volume.root])
    first = volume.root / "a.yaml"
    assert caught.value.problems == (
        Problem(str(volume.root / "b.yaml"), 4, 11, "x", f"duplicate rule name; first defined at {first}:2"),
    )


def test_hidden_paths_below_a_directory_are_skipped_and_visible_links_followed(tmp_path: Path) -> None:
    # A ConfigMap's items may place keys in subdirectories: the visible link is then a directory's.
    top = tmp_path / ".config" / "rules"  # hidden above the directory given: no matter
    ConfigMapVolume(top, {"a.yaml": rules("a"), "team/b.yaml": rules("b")})
    (top / ".draft.yaml").write_text(rules("draft"))
    (top / ".git").mkdir()
    (top / ".git" / "c.yaml").write_text(rules("git"))
    (top / "plain").mkdir()  # a subdirectory that is not hidden is searched, at any depth
    (top / "plain" / "deeper").mkdir()
    (top / "plain" / "deeper" / "c.yml").write_text(rules("c"))
    (top / "plain" / ".swap.yaml").write_text(rules("swap"))
    (top / "plain" / "notes.txt").write_text("not rules")
    (top / "plain" / "loop").symlink_to("..")  # walked once
    (top / "gone.yaml").symlink_to("..data/gone.yaml")  # dangling, as a removed key's link is mid-update
    assert paths_of([top]) == [top / "a.yaml", top / "plain" / "deeper" / "c.yml", top / "team" / "b.yaml"]
    assert names(top) == ["a", "c", "b"]


def test_a_file_given_by_name_is_read_even_when_hidden(tmp_path: Path) -> None:
    ConfigMapVolume(tmp_path, {"rules.yaml": rules("a")})
    named = tmp_path / "..data" / "rules.yaml"
    assert paths_of([named]) == [named]
    assert [rule.name for rule in load_rules_of([named]).rules] == ["a"]


# Each row: the ConfigMap's files before and after an update, and the rules loaded after it.
UPDATES = [
    pytest.param({"rules.yaml": rules("a")}, {"rules.yaml": rules("b")}, ["b"], id="changed"),
    pytest.param({"rules.yaml": rules("a")}, {"rules.yaml": rules("a"), "z.yaml": rules("z")}, ["a", "z"], id="added"),
    pytest.param({"rules.yaml": rules("a"), "z.yaml": rules("z")}, {"z.yaml": rules("z")}, ["z"], id="removed"),
    pytest.param({"rules.yaml": rules("a")}, {"team/rules.yaml": rules("t")}, ["t"], id="moved-below"),
]


@pytest.mark.parametrize(("before", "after", "loaded"), UPDATES)
def test_the_kubelets_swap_changes_the_fingerprint_and_the_table(
    tmp_path: Path, before: dict[str, str], after: dict[str, str], loaded: list[str]
) -> None:
    volume = ConfigMapVolume(tmp_path / "rules", before)
    seen = fingerprint([volume.root])
    old = names(volume.root)
    volume.update(after)
    assert len(volume.hidden()) == 1
    assert fingerprint([volume.root]) != seen
    assert names(volume.root) == loaded != old
    assert sorted(p.name for p in volume.root.iterdir() if not p.name.startswith(".")) == sorted(
        {key.split("/")[0] for key in after}
    )


def test_an_update_that_changes_nothing_leaves_the_fingerprint_as_it_was(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path, {"rules.yaml": rules("a")})
    seen = fingerprint([tmp_path])
    volume.update({"rules.yaml": rules("a")})
    assert fingerprint([tmp_path]) == seen


def test_the_fingerprint_compares_content_not_size_and_time(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules("a"))
    stat = path.stat()
    seen = fingerprint([tmp_path])
    path.write_text(rules("b"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert fingerprint([tmp_path]) != seen


def test_midway_through_an_update_a_dangling_link_is_skipped_and_the_volume_unsettled(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path, {"rules.yaml": rules("a"), "z.yaml": rules("z")})
    assert fingerprint([tmp_path]).settled
    steps = volume.steps({"rules.yaml": rules("b")})
    while next(steps) != "renamed over ..data":
        pass
    assert (tmp_path / "z.yaml").is_symlink()
    assert not (tmp_path / "z.yaml").exists()
    assert paths_of([tmp_path]) == [tmp_path / "rules.yaml"]
    midway = fingerprint([tmp_path])
    assert not midway.settled
    assert [path for path, _ in midway.files] == [str(tmp_path / "rules.yaml")]
    assert names(tmp_path) == ["b"]
    for _ in steps:
        pass
    assert fingerprint([tmp_path]) == Fingerprint(midway.files, settled=True)


def test_a_new_key_not_yet_linked_leaves_the_volume_unsettled(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path, {"rules.yaml": rules("a")})
    steps = volume.steps({"rules.yaml": rules("a"), "z.yaml": rules("z")})
    while next(steps) != "renamed over ..data":
        pass
    assert not fingerprint([tmp_path]).settled
    assert next(steps) == "linked new keys"
    assert fingerprint([tmp_path]).settled


def test_a_hidden_key_is_skipped_and_leaves_the_volume_settled(tmp_path: Path) -> None:
    ConfigMapVolume(tmp_path, {".draft.yaml": rules("draft"), "rules.yaml": rules("a")})
    assert (tmp_path / ".draft.yaml").is_symlink()
    found = fingerprint([tmp_path])
    assert found.settled
    assert [path for path, _ in found.files] == [str(tmp_path / "rules.yaml")]


@pytest.mark.parametrize(("before", "after", "loaded"), UPDATES)
def test_wherever_a_check_lands_in_an_update_the_watch_reloads_once_for_the_new_version(
    tmp_path: Path, before: dict[str, str], after: dict[str, str], loaded: list[str]
) -> None:
    steps = len(list(ConfigMapVolume(tmp_path / "count", before).steps(after)))
    for at in range(steps):
        volume = ConfigMapVolume(tmp_path / str(at), before)
        watch = RulesWatch(fingerprint([volume.root]))
        reloaded = []
        for step, _ in enumerate(volume.steps(after)):
            if step == at and watch.changed(fingerprint([volume.root])):
                reloaded.append(names(volume.root))
        if watch.changed(fingerprint([volume.root])):
            reloaded.append(names(volume.root))
        assert reloaded == [loaded], f"a check after step {at}"
        assert not watch.changed(fingerprint([volume.root]))


def test_a_volume_that_stays_midway_is_reloaded_at_the_second_check(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path, {"rules.yaml": rules("a")})
    watch = RulesWatch(fingerprint([tmp_path]))
    volume.update({"rules.yaml": rules("b")})
    (tmp_path / "stale.yaml").symlink_to("..data/stale.yaml")  # left dangling: not an update under way
    assert not fingerprint([tmp_path]).settled
    assert [watch.changed(fingerprint([tmp_path])) for _ in range(3)] == [False, True, False]


def test_a_plain_directory_with_a_dangling_link_is_settled(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(rules("a"))
    (tmp_path / "gone.yaml").symlink_to("nowhere.yaml")
    assert fingerprint([tmp_path]).settled
    assert paths_of([tmp_path]) == [tmp_path / "rules.yaml"]


def test_the_watch_reloads_for_an_edit_an_added_file_and_a_removed_one(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules("a"))
    watch = RulesWatch(fingerprint([tmp_path]))
    assert not watch.changed(fingerprint([tmp_path]))
    path.write_text(rules("b"))
    assert watch.changed(fingerprint([tmp_path]))
    (tmp_path / "more.yaml").write_text(rules("c"))
    assert watch.changed(fingerprint([tmp_path]))
    path.unlink()
    assert watch.changed(fingerprint([tmp_path]))
    assert not watch.changed(fingerprint([tmp_path]))


class SwapOnce(Placeholders):
    """An environment that makes the kubelet's update the first time the loader asks it for a secret:
    after reading the first file and before reading the next."""

    def __init__(self, volume: ConfigMapVolume, files: dict[str, str]) -> None:
        self.volume, self.files, self.swaps = volume, files, 0

    def __getitem__(self, name: str) -> str:
        if not self.swaps:
            self.swaps += 1
            self.volume.update(self.files)
        return super().__getitem__(name)


#: A rule with a secret: loading it asks the environment, between reading its file and the next.
FIRST = "  - name: first\n    actions: [{type: webhook, url: 'https://x.test/', secret_headers: {k: '${env:K}'}}]\n"

# Each row: the files before and after an update that lands while the loader reads the first file,
# what reading across it finds wrong (a key removed as it is read; a rule moved between files, met
# twice), and the rules of the new version.
RACES = [
    pytest.param(
        {"a.yaml": "rules:\n" + FIRST, "b.yaml": rules("moved")},
        {"a.yaml": "rules:\n" + FIRST + rules("moved").removeprefix("rules:\n")},
        "cannot read the rules file",
        ["first", "moved"],
        id="key-removed",
    ),
    pytest.param(
        {"a.yaml": "rules:\n" + FIRST + rules("moved").removeprefix("rules:\n"), "b.yaml": rules("other")},
        {"a.yaml": "rules:\n" + FIRST, "b.yaml": rules("other", "moved")},
        "duplicate rule name",
        ["first", "other", "moved"],
        id="rule-moved",
    ),
]


@pytest.mark.parametrize(("before", "after", "mixed", "loaded"), RACES)
def test_an_update_while_the_rules_are_read_is_read_again(
    tmp_path: Path, before: dict[str, str], after: dict[str, str], mixed: str, loaded: list[str]
) -> None:
    # Read once, across the update, the table is rejected for a problem no version has...
    volume = ConfigMapVolume(tmp_path / "once", before)
    env = SwapOnce(volume, after)
    with pytest.raises(RulesError) as caught:
        load_rules(paths_of([volume.root]), env=env)
    assert env.swaps == 1
    assert any(mixed in problem.message for problem in caught.value.problems)
    # ... which reading again, once the update is seen, does not reject.
    volume = ConfigMapVolume(tmp_path / "again", before)
    env = SwapOnce(volume, after)
    table = load_rules_of([volume.root], env=env)
    assert env.swaps == 1
    assert [rule.name for rule in table.rules] == loaded


def test_a_table_that_stays_invalid_is_rejected(tmp_path: Path) -> None:
    ConfigMapVolume(tmp_path, {"rules.yaml": "rules: 7\n"})
    with pytest.raises(RulesError) as caught:
        load_rules_of([tmp_path])
    assert [problem.file for problem in caught.value.problems] == [str(tmp_path / "rules.yaml")]
