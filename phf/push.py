"""``phf-push``: upload a saved phf model (a run's ``final/`` or a checkpoint) to the Hugging Face Hub.

    phf-push RUN/final --repo-id user/pep8-conditional            # the model, public
    phf-push RUN/final --repo-id user/pep8-conditional --private --checkpoints

Only the files phf writes are uploaded (``PHF_FILES``, an explicit allow-list): weights (safetensors),
tokenizer, ``generation_config.json`` (phf's sampling settings and banned tokens), the ``README.md`` model
card (which the Hub shows as the model's page), ``phf_objective.json`` (phf-eval's objective) and
``phf_summary.json``. Anything else in the directory (a symlink, a pickle, a stray ``notes.txt``) stays
local, and the upload says which files it left out; a symlink in place of one of phf's files is refused.
With ``--checkpoints`` every complete ``RUN/checkpoints/step_*`` goes under ``checkpoints/step_*/`` in the
same repo (``from_pretrained(repo, subfolder="checkpoints/step_...")``) without its training state
(``trainer_state.pt``, ``data_state_rank*.pt``: optimizer, RNG and data position, which only resuming
needs, and pickled torch files a model user should not have to load).

Refused before any request, each with one line naming what is wrong: a repo id the Hub would reject; a
directory that is not a complete phf model (no ``config.json``, model card or ``phf_objective.json``; a
truncated weights file; a ``config.json`` whose vocabulary does not match the weights or the tokenizer;
no ``tokenizer.json``; a ``final/`` without ``phf_summary.json``, the file phf-train writes last), and
offline mode (``HF_HUB_OFFLINE=1``). No network, or an HTTP error from the Hub, is one line too (not a
traceback). Authentication is huggingface_hub's (``HF_TOKEN``, ``hf auth login``) or ``--token``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from phf.card import CARD_FILE, METADATA_FILE, read_objective_metadata
from phf.checkpoint import TRAINER_STATE, check_checkpoint, check_safetensors, data_state_name
from phf.console import plain
from phf.model import VALUE_HEAD_FILE
from phf.model_dir import check_model_files
from phf.rundir import FINAL, SUMMARY, checkpoints_dir, summary_path

TRAINING_STATE = [TRAINER_STATE, data_state_name("*")]  # what only resuming needs: never uploaded
# every file phf-train writes into final/ and a checkpoint's model part; nothing else is ever uploaded
PHF_FILES = ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
             VALUE_HEAD_FILE, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "chat_template.jinja", CARD_FILE, METADATA_FILE, SUMMARY)
SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")  # a large model's weights, named by the index file


def upload_files(model_dir: Path) -> tuple[list[Path], list[str]]:
    """(phf's files in ``model_dir`` to upload, the other entries left out with why). A symlink in place of
    one of phf's files is refused: phf writes regular files, and a link could point anywhere."""
    files, left = [], []
    for p in sorted(model_dir.iterdir()):
        ours = p.name in PHF_FILES or SHARD.fullmatch(p.name)
        if ours and p.is_symlink():
            raise SystemExit(f"phf-push: {p} is a symbolic link (to {p.readlink()}), not a file phf wrote; nothing was "
                             "uploaded: replace it with the real file")
        if ours and p.is_file():
            files.append(p)
        elif not any(p.match(t) for t in TRAINING_STATE):
            left.append(f"{p.name} ({'symlink' if p.is_symlink() else 'directory' if p.is_dir() else 'not a phf file'})")
    return files, left


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
        check_model_files(model_dir)
    except ValueError as e:
        raise SystemExit(f"phf-push: {e}") from None
    if model_dir.name == FINAL and not summary_path(model_dir).is_file():
        raise SystemExit(f"phf-push: {model_dir} is incomplete: no phf_summary.json, the file phf-train writes "
                         "last (was the run killed while writing final/?)")
    try:
        return read_objective_metadata(model_dir)
    except ValueError as e:
        raise SystemExit(f"phf-push: {e}") from None


def run_checkpoints(model_dir: Path) -> list[Path]:
    """The complete checkpoints of the run whose ``final/`` is ``model_dir``, oldest first."""
    root = checkpoints_dir(model_dir.parent)
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


def _connection_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the Hub cannot be reached" (huggingface_hub, httpx, requests)."""
    import importlib

    errors: list[type[BaseException]] = [OSError, TimeoutError]
    for name in ("httpx", "httpx2"):  # huggingface_hub's HTTP client (httpx2 in huggingface_hub 2)
        try:
            errors.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            pass
    try:
        import requests

        errors.append(requests.exceptions.ConnectionError)
        errors.append(requests.exceptions.Timeout)
    except ImportError:
        pass
    return tuple(errors)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


def check_repo_id(repo_id: str, key: str, example: str, prog: str = "phf-push") -> None:
    """Refuse a Hub repository id that is not NAMESPACE/NAME, naming the option ``key`` it came from."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise SystemExit(f"{prog}: {key} {repo_id!r} is not a valid Hub repository id "
                         f"({' '.join(str(e).split())}); use NAMESPACE/NAME, e.g. {example}") from None


def check_online(repo_id: str, what: str, prog: str = "phf-push") -> None:
    """Refuse to push in offline mode (HF_HUB_OFFLINE=1), before anything is uploaded."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise SystemExit(f"{prog}: the Hugging Face Hub is in offline mode (HF_HUB_OFFLINE=1): nothing was "
                         f"uploaded; unset HF_HUB_OFFLINE (and connect) to push {what} to {repo_id}")


def commit_to_hub(repo_id: str, plan: list, repo_type: str, private: bool, token: str | None, what: str,
                  prog: str = "phf-push") -> list[str]:
    """Create ``repo_id`` (kept if it exists) and make one commit per ``(operations, message)`` of ``plan``;
    returns the commit URLs. A Hub error or no network is one line naming ``what`` (SystemExit)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    urls = []
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type)
        for ops, message in plan:
            info = api.create_commit(repo_id=repo_id, operations=ops, commit_message=message, repo_type=repo_type)
            urls.append(str(getattr(info, "commit_url", info)))
    except HfHubHTTPError as e:
        status = e.response.status_code if getattr(e, "response", None) is not None else None
        hint = (" (log in with `hf auth login`, set HF_TOKEN or pass phf-push --token, with write access to the repo)"
                if status in (401, 403) else "")
        raise SystemExit(f"{prog}: pushing {what} to {repo_id} failed: {_one_line(e)}{hint}") from None
    except _connection_errors() as e:
        raise SystemExit(f"{prog}: pushing {what} to {repo_id} failed: cannot reach the Hugging Face Hub "
                         f"({_one_line(e)}); check the network (or a proxy), then run {prog} again") from None
    return urls


def push(model_dir: Path, repo_id: str, private: bool = False, checkpoints: bool = False,
         token: str | None = None, commit_message: str | None = None) -> list[str]:
    """Create ``repo_id`` (kept if it exists) and upload phf's files of ``model_dir`` (and of the run's
    checkpoints, ``--checkpoints``); returns the commit URLs."""
    from huggingface_hub import CommitOperationAdd

    check_repo_id(repo_id, "--repo-id", "user/pep8-conditional")
    model_dir = Path(model_dir)
    meta = check_model_dir(model_dir)
    ckpts = run_checkpoints(model_dir) if checkpoints else []
    check_online(repo_id, str(model_dir))
    what = f"{meta.get('objective') or meta['objective_name']} on {meta['task']}"
    uploads = [(model_dir, None, commit_message or f"phf: {what} ({model_dir.name})")]
    uploads += [(p, f"checkpoints/{p.name}", f"phf: {what} (checkpoint {p.name})") for p in ckpts]
    plan = []
    for d, prefix, message in uploads:
        files, left = upload_files(d)
        if left:
            print(f"phf-push: not uploaded from {d} (phf did not write them): {', '.join(left)}")
        ops = [CommitOperationAdd(path_in_repo=f"{prefix}/{f.name}" if prefix else f.name, path_or_fileobj=str(f))
               for f in files]
        plan.append((ops, message))
    return commit_to_hub(repo_id, plan, repo_type="model", private=private, token=token, what=str(model_dir))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="phf-push", description=plain(__doc__.split("\n\n")[0]))
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
