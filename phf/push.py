"""``phf-push``: upload a saved phf model (a run's ``final/`` or a checkpoint) to the Hugging Face Hub.

    phf-push RUN/final --repo-id user/pep8-conditional            # the model, public
    phf-push RUN/final --repo-id user/pep8-conditional --private --checkpoints

The model directory is uploaded as phf wrote it: weights (safetensors), tokenizer,
``generation_config.json`` (phf's sampling settings and banned tokens), the ``README.md`` model card
(which the Hub shows as the model's page), ``phf_objective.json`` (phf-eval's objective) and
``phf_summary.json``. With ``--checkpoints`` every complete ``RUN/checkpoints/step_*`` goes under
``checkpoints/step_*/`` in the same repo (``from_pretrained(repo, subfolder="checkpoints/step_...")``)
without its training state (``trainer_state.pt``, ``data_state_rank*.pt``: optimizer, RNG and data
position, which only resuming needs, and pickled torch files a model user should not have to load).

Refused before any request: a directory that is not a complete phf model (no ``config.json``, model
card or ``phf_objective.json``; a truncated weights file; a ``final/`` without ``phf_summary.json``,
the file phf-train writes last), and offline mode (``HF_HUB_OFFLINE=1``): a clear error, not a wait on
the network. Authentication is huggingface_hub's (``HF_TOKEN``, ``hf auth login``) or ``--token``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from phf.card import CARD_FILE, METADATA_FILE
from phf.checkpoint import check_checkpoint, check_safetensors

TRAINING_STATE = ["trainer_state.pt", "data_state_rank*.pt"]  # what only resuming needs: never uploaded


def check_model_dir(model_dir: Path) -> dict:
    """The model's ``phf_objective.json`` after checking that ``model_dir`` is a complete phf model
    directory; a SystemExit naming the missing or broken file otherwise."""
    if not model_dir.is_dir():
        raise SystemExit(f"phf-push: {model_dir} is not a directory")
    for name, why in (("config.json", "not a saved HF model"),
                      (CARD_FILE, "no model card; phf-train writes one into final/ and every checkpoint"),
                      (METADATA_FILE, "no phf metadata; phf-train writes it into final/ and every checkpoint")):
        if not (model_dir / name).is_file():
            raise SystemExit(f"phf-push: {model_dir / name} is missing ({why})")
    try:
        check_safetensors(model_dir)
    except ValueError as e:
        raise SystemExit(f"phf-push: {e}") from None
    if model_dir.name == "final" and not (model_dir / "phf_summary.json").is_file():
        raise SystemExit(f"phf-push: {model_dir} is incomplete: no phf_summary.json, the file phf-train writes "
                         "last (was the run killed while writing final/?)")
    return json.loads((model_dir / METADATA_FILE).read_text())


def run_checkpoints(model_dir: Path) -> list[Path]:
    """The complete checkpoints of the run whose ``final/`` is ``model_dir``, oldest first."""
    root = model_dir.parent / "checkpoints"
    found = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    if not found:
        raise SystemExit(f"phf-push: --checkpoints: no checkpoint in {root} (trainer.checkpoint_every=0 keeps none)")
    for p in found:
        try:
            check_checkpoint(p)
        except (OSError, ValueError) as e:
            raise SystemExit(f"phf-push: --checkpoints: {e}") from None
        check_model_dir(p)
    return found


def push(model_dir: Path, repo_id: str, private: bool = False, checkpoints: bool = False,
         token: str | None = None, commit_message: str | None = None) -> list[str]:
    """Create ``repo_id`` (kept if it exists) and upload ``model_dir`` (and the run's checkpoints);
    returns the commit URLs."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    model_dir = Path(model_dir)
    meta = check_model_dir(model_dir)
    ckpts = run_checkpoints(model_dir) if checkpoints else []
    if constants.is_offline_mode():
        raise SystemExit("phf-push: the Hugging Face Hub is in offline mode (HF_HUB_OFFLINE=1): nothing was "
                         f"uploaded; unset HF_HUB_OFFLINE (and connect) to push {model_dir} to {repo_id}")
    what = f"{meta['objective']} on {meta['task']}"
    api = HfApi(token=token)
    urls = []
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=repo_id, folder_path=str(model_dir), repo_type="model",
                                 commit_message=commit_message or f"phf: {what} ({model_dir.name})",
                                 ignore_patterns=TRAINING_STATE)
        urls.append(str(getattr(info, "commit_url", info)))
        for p in ckpts:
            info = api.upload_folder(repo_id=repo_id, folder_path=str(p), path_in_repo=f"checkpoints/{p.name}",
                                     repo_type="model", commit_message=f"phf: {what} (checkpoint {p.name})",
                                     ignore_patterns=TRAINING_STATE)
            urls.append(str(getattr(info, "commit_url", info)))
    except HfHubHTTPError as e:
        hint = (" (log in with `hf auth login`, set HF_TOKEN or pass --token, with write access to the repo)"
                if e.response is not None and e.response.status_code in (401, 403) else "")
        raise SystemExit(f"phf-push: pushing {model_dir} to {repo_id} failed: {e}{hint}") from None
    except OSError as e:  # connection errors (requests' and httpx' derive from OSError)
        raise SystemExit(f"phf-push: pushing {model_dir} to {repo_id} failed: cannot reach the Hub: {e}") from None
    return urls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="phf-push", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="a run's final/ (or a checkpoint directory)")
    parser.add_argument("--repo-id", required=True, help="the Hub repository, e.g. user/pep8-conditional")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--checkpoints", action="store_true",
                        help="also upload RUN/checkpoints/step_* (model files only) under checkpoints/")
    parser.add_argument("--token", default=None, help="a Hub token (default: HF_TOKEN or the stored login)")
    parser.add_argument("--commit-message", default=None, help="the model commit's message")
    args = parser.parse_args(argv)
    urls = push(args.model_dir, args.repo_id, args.private, args.checkpoints, args.token, args.commit_message)
    print(f"phf-push: {args.model_dir} -> https://huggingface.co/{args.repo_id} ({len(urls)} commits)")


if __name__ == "__main__":
    main()
