"""Recommendations out: the `recommend` rules' top k for every user, in shards, and `python -m slmrec recommend` on an
export, on the tiny demo (`served_demo`, conftest)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from conftest import RECOMMEND_K, SMALL_BATCHES, run_snakemake

from slmrec import layout
from slmrec.__main__ import main
from slmrec.call import StageCall
from slmrec.recommend import RECOMMENDATION_SCHEMA, IdMap, KnownUsers, shard_batches
from slmrec.stages import recommend_shard

pytestmark = pytest.mark.e2e


def data(workdir):
    results = workdir / "results" / "demo"
    known = KnownUsers.read(results / "data" / layout.DATA_FILES["splits"])
    return (
        known,
        IdMap.read(results / "data" / layout.DATA_FILES["user_ids"], "user"),
        IdMap.read(results / "data" / layout.DATA_FILES["item_ids"], "item"),
    )


@pytest.mark.parametrize("target", ["student", "sasrec"])
def test_every_user_gets_k_raw_items_ranked_by_score_none_of_their_history(served_demo, target):
    """Each user's whole known history (the test item too) is left out, and the items come back as raw ids."""
    table = pl.read_parquet(served_demo / layout.recommendations(target, "demo"))
    assert dict(table.schema) == RECOMMENDATION_SCHEMA
    known, users, items = data(served_demo)
    assert table["user"].unique(maintain_order=True).to_list() == list(users.raw[known.ids])  # every user, in order
    for (user,), rows in table.group_by("user", maintain_order=True):
        assert rows["rank"].to_list() == list(range(1, RECOMMEND_K + 1)), user
        assert rows["score"].is_sorted(descending=True), user
        history = {items.raw[i] for i in known.histories[users.internal[user] - 1]}
        assert set(rows["item"]) <= set(items.raw[1:]) and not set(rows["item"]) & history, user
    manifest = json.loads((served_demo / layout.recommendations(target, "demo", name="manifest")).read_text())
    assert manifest["stage"] == "recommend" and len(manifest["inputs"]) == 1  # the gather step, of one shard
    shard = layout.recommendation_shard(target, "1-of-1", "demo", name="manifest")
    config = json.loads((served_demo / shard).read_text())["config"]
    assert config["recommend"] == {"exclude_history": True, "k": RECOMMEND_K}
    assert (config["target"], config["shard"]) == (target, "1-of-1")
    assert config["backbone"] == ({"precision": "auto"} if target == "student" else {})  # an LLM's setting alone


def test_exclude_history_false_lets_a_users_own_items_back(served_demo, tmp_path):
    """`recommend.exclude_history: false`: the shard stage, run on the demo's SASRec with every item asked for, ranks
    the users' own items too, in the order of the default run's items once those are dropped."""
    results = served_demo / "results" / "demo"
    known, users, items = data(served_demo)
    inputs = {
        "model": served_demo / layout.model_file("sasrec", "model", "demo"),
        **{name: results / "data" / layout.DATA_FILES[name] for name in ("splits", "user_ids", "item_ids")},
    }
    tables = {}
    for exclude in (True, False):
        output = tmp_path / f"exclude_{exclude}.parquet"
        params = {"target": "sasrec", "shard": "1-of-1", "backbone": {}}
        params["recommend"] = {"exclude_history": exclude, "k": len(items)}
        outputs = {"parquet": str(output), "manifest": str(output.with_suffix(".json"))}
        call = StageCall("recommend_shard", {k: str(v) for k, v in inputs.items()}, outputs, params)
        recommend_shard.run(replace(call, resources={"eval_batch_size": 16}))
        tables[exclude] = pl.read_parquet(output)
    for (user,), rows in tables[False].group_by("user", maintain_order=True):
        history = {items.raw[i] for i in known.histories[users.internal[user] - 1]}
        assert rows.height == len(items) and history <= set(rows["item"]), user  # every item, the history's too
        others = rows.filter(~pl.col("item").is_in(list(history)))["item"].to_list()
        assert others == tables[True].filter(pl.col("user") == user)["item"].to_list(), user


def test_shards_split_whole_batches_each_once_in_order():
    batches = [np.array([i]) for i in range(7)]
    for count in (1, 2, 3, 7, 9):
        parts = [shard_batches(batches, f"{i}-of-{count}") for i in range(1, count + 1)]
        assert [b for part in parts for b in part] == batches, count
    with pytest.raises(ValueError, match="4-of-3"):
        shard_batches(batches, "4-of-3")


def test_one_and_three_shards_give_identical_output(served_demo, tmp_path):
    """`--set-scatter recommend=3`: three shard jobs, each a run of whole batches, and one gather step; the table is
    the one-shard table, byte for byte in its content."""
    workdir = tmp_path / "run"
    shutil.copytree(served_demo, workdir, symlinks=True)
    target = layout.recommendations("sasrec", "demo")
    run_snakemake(workdir, target, "--set-scatter", "recommend=3", *SMALL_BATCHES, "--configfile", "tiny.yaml")
    shards = [pl.read_parquet(workdir / layout.recommendation_shard("sasrec", f"{i}-of-3", "demo")) for i in (1, 2, 3)]
    assert all(shard.height for shard in shards)
    assert sum(shard.height for shard in shards) == pl.read_parquet(served_demo / target).height
    assert pl.read_parquet(workdir / target).equals(pl.read_parquet(served_demo / target))


# --- python -m slmrec recommend ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export(served_demo):
    return served_demo / layout.export("student", "float32", "demo")


@pytest.fixture(scope="module")
def history(served_demo):
    """Three raw item ids of the demo: a user's first training items."""
    known, _, items = data(served_demo)
    return [items.raw[i] for i in known.histories[0][:3]]


def recommend(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["recommend", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_gives_k_raw_items_after_a_history(export, history, capsys):
    code, out, _ = recommend(capsys, str(export), "--history", ",".join(history), "-k", "5", "--json")
    assert code == 0
    (line,) = out.splitlines()
    answer = json.loads(line)
    assert answer["history"] == 1 and len(answer["items"]) == len(answer["scores"]) == 5
    assert answer["scores"] == sorted(answer["scores"], reverse=True) and not set(answer["items"]) & set(history)
    code, out, _ = recommend(capsys, str(export), "--history", ",".join(history), "-k", "5")
    assert code == 0 and out.startswith("history 1: top 5 of ") and "| rank | item | score |" in out
    assert all(item in out for item in answer["items"])


def test_an_unknown_id_is_named_and_dropped_only_when_asked(export, history, capsys):
    given = ",".join([history[0], "NOPE", history[1]])
    code, out, err = recommend(capsys, str(export), "--history", given)
    assert code == 2 and not out
    assert "history 1: unknown item id 'NOPE', not among the model's" in err and "--skip-unknown" in err
    code, out, err = recommend(capsys, str(export), "--history", given, "--skip-unknown", "--json")
    assert code == 0 and "note: history 1: dropped the unknown item ids 'NOPE'" in err
    _, expected, _ = recommend(capsys, str(export), "--history", ",".join(history[:2]), "--json")
    assert out == expected


@pytest.mark.parametrize("given", ["", " , ", "NOPE"])
def test_an_empty_history_is_refused(export, capsys, given):
    code, out, err = recommend(capsys, str(export), "--history", given, "--skip-unknown")
    assert code == 2 and not out
    assert "history 1: the history is empty" in err and "give at least one item id the model knows" in err
    if given == "NOPE":
        assert "empty once its unknown ids are dropped" in err


def test_include_history_lets_the_historys_own_items_back(export, history, served_demo, capsys):
    """With every item asked for, the default leaves out the history's items and --include-history ranks them too;
    the other items keep their order."""
    every = len(data(served_demo)[2])
    asked = [str(export), "--history", ",".join(history), "-k", str(every), "--json"]
    code, out, _ = recommend(capsys, *asked)
    excluded = json.loads(out)["items"]
    assert code == 0 and len(excluded) == every - len(history) and not set(excluded) & set(history)
    code, out, _ = recommend(capsys, *asked, "--include-history")
    included = json.loads(out)["items"]
    assert code == 0 and len(included) == every and set(history) <= set(included)
    assert [item for item in included if item not in history] == excluded


def test_a_repeated_id_is_kept_once_at_its_first_place(export, history, capsys):
    repeated = [history[0], history[1], history[0], history[2], history[1]]
    code, out, err = recommend(capsys, str(export), "--history", ",".join(repeated), "--json")
    assert code == 0
    assert f"note: history 1: kept only the first of each repeated item ('{history[0]}', '{history[1]}')" in err
    assert out == recommend(capsys, str(export), "--history", ",".join(history), "--json")[1]


def test_a_file_of_histories_in_json_lines_or_parquet(export, history, served_demo, tmp_path, capsys):
    known, _, items = data(served_demo)
    second = [items.raw[i] for i in known.histories[1][:4]]
    lines = tmp_path / "histories.jsonl"
    lines.write_text(json.dumps({"user": "u1", "history": history}) + "\n\n" + json.dumps(second) + "\n")
    table = tmp_path / "histories.parquet"
    pl.DataFrame({"user": ["u1", None], "history": [history, second]}).write_parquet(table)
    answers = []
    for path in (lines, table):
        code, out, _ = recommend(capsys, str(export), "--histories", str(path), "--json")
        assert code == 0
        answers.append([json.loads(line) for line in out.splitlines()])
    assert answers[0] == answers[1]
    first, other = answers[0]
    assert (first["history"], first["user"], other["history"], "user" in other) == (1, "u1", 2, False)
    alone = json.loads(recommend(capsys, str(export), "--history", ",".join(second), "--json")[1])
    assert other["items"] == alone["items"]
    lines.write_text(json.dumps(history) + "\n\n" + json.dumps({"user": "u2", "history": ["NOPE"]}) + "\n")
    code, _, err = recommend(capsys, str(export), "--histories", str(lines))
    assert code == 2 and f"{lines}, line 3 (user u2): unknown item id 'NOPE'" in err  # the line, not the count
    pl.DataFrame({"history": [history, ["NOPE"]]}).write_parquet(table)
    code, _, err = recommend(capsys, str(export), "--histories", str(table))
    assert code == 2 and f"{table}, row 2 (history 2): unknown item id 'NOPE'" in err
    (tmp_path / "bad.jsonl").write_text('{"items": ["x"]}\n')
    code, _, err = recommend(capsys, str(export), "--histories", str(tmp_path / "bad.jsonl"))
    assert code == 2 and "bad.jsonl, line 1: expected a JSON list of item ids, or an object with a `history`" in err
    pl.DataFrame({"history": [",".join(history)]}).write_parquet(tmp_path / "text.parquet")
    code, _, err = recommend(capsys, str(export), "--histories", str(tmp_path / "text.parquet"))
    assert code == 2 and "text.parquet: column `history` is String; expected a list of item ids per row" in err


@pytest.mark.parametrize("k", ["0", "-1", "two"])
def test_k_below_one_is_a_usage_error(export, history, capsys, k):
    with pytest.raises(SystemExit) as stop:
        recommend(capsys, str(export), "--history", ",".join(history), "-k", k)
    assert stop.value.code == 2
    assert f"argument -k: expected a whole number of at least 1, got '{k}'" in capsys.readouterr().err


def test_a_directory_that_is_no_export_is_named(tmp_path, capsys):
    code, _, err = recommend(capsys, str(tmp_path), "--history", "x")
    assert code == 2 and f"{tmp_path} is not an export" in err and "snakemake --cores 1 results/" in err
