"""The oracle arm (issue 30, item 2): the same stages, every one labelled by the task scorer."""

from phf.spa.oracle import oracle_stages

STAGES = {"seed": {"num_prompts": 40, "labeler": "scorer", "epochs": 3},
          "round1": {"num_prompts": 320, "labeler": "implicit", "epochs": 1},
          "round2": {"num_prompts": 440, "labeler": "hybrid", "seed_fraction": 0.05, "epochs": 1}}


def test_oracle_relabels_every_stage_and_keeps_the_rest():
    out = oracle_stages(STAGES, True)
    assert list(out) == list(STAGES) and all(st["labeler"] == "scorer" for st in out.values())
    assert [st["num_prompts"] for st in out.values()] == [40, 320, 440]
    assert [st["epochs"] for st in out.values()] == [3, 1, 1] and "seed_fraction" not in out["round2"]
    assert STAGES["round1"]["labeler"] == "implicit"  # the input is not changed
    assert oracle_stages(STAGES, False) is STAGES
