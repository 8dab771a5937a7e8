"""``alcsp run CONFIG.toml`` (a new campaign) or ``alcsp run DIR`` (continue one).

One run per campaign directory: the run holds ``DIR/run.lock`` (``alcsp.lock``) from
before it writes anything until its workers are gone; a second run refuses, naming the
first. A killed run's lock is free at once (the kernel drops it with the process).

A campaign directory holds its config, and ``alcsp run DIR`` runs what that config names:
an oracle ``command`` (Quantum ESPRESSO runs it as a program, ASE runs VASP's through a
shell), the Dask job-script lines and worker Python (``[executor.dask]``). So a campaign
directory received from someone else is code. When this user creates a campaign or passes
a config (``alcsp run CONFIG``, ``--config NEW.toml``), the run stores an owner record in
the campaign meta (``owner``: user, uid, host, and an HMAC-SHA256 of those command fields
under a key in this user's own config folder, ``$XDG_CONFIG_HOME/alcsp/owner.key``, so
that it cannot be forged inside the directory). ``alcsp run DIR`` checks it before running
anything: when the stored config names commands and the record is missing, names another
user or host, or does not match the commands (changed without ``--config``), it refuses
with the commands shown, until rerun with ``--trust-config`` (which signs them for this
user). A config without such fields is never refused.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import socket
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alcsp.campaign.events import Event, Notice, describe
from alcsp.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, UserError

if TYPE_CHECKING:
    from rich.console import Console

    from alcsp.commands.progress import LiveDisplay

#: The campaign meta key of the owner record.
OWNER_KEY = "owner"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run an active-learning campaign, or continue one",
        description=(
            "Start the campaign described by CONFIG.toml in --dir (default runs/<name>), or "
            "continue the campaign in DIR exactly where it stopped. With DIR, --config "
            "replaces the stored config (e.g. a larger budget) before continuing. A stored "
            "config that names commands (an oracle command, Dask job-script lines) continues "
            "only for the user, on the host, that wrote it (see --trust-config)."
        ),
    )
    p.add_argument("target", type=Path, help="campaign config (TOML) or campaign directory")
    p.add_argument("--dir", type=Path, help="campaign directory for a new campaign")
    p.add_argument("--config", type=Path, help="with DIR: a new config to continue under")
    p.add_argument("--quiet", action="store_true", help="print only the final hull")
    p.add_argument(
        "--trust-config",
        action="store_true",
        help="with DIR: run the commands of the stored config even though this user did "
        "not write them here (a campaign from another user or host, or a changed config)",
    )
    p.set_defaults(func=run)


# -- who wrote the commands of a stored config ---------------------------------------------


def config_commands(config_text: str) -> dict[str, Any]:
    """The values of a config that become commands, executables or job-script lines:
    ``[oracle.parameters] command`` and any ``command`` in ``[oracle] retries`` (Quantum
    ESPRESSO, VASP), and the whole ``[executor.dask]`` table (dask-jobqueue writes its
    strings into a batch script: ``job_script_prologue``, ``job_extra_directives``,
    ``python``, queue and account; ``address`` is a scheduler that sends this process
    pickles). Only values the config sets (a code's default resolves on this machine).
    Keyed by where they are, e.g. ``"[oracle.parameters] command"``."""
    try:
        data = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError:
        return {}  # the campaign cannot open such a config anyway
    out: dict[str, Any] = {}
    oracle: dict[str, Any] = data["oracle"] if isinstance(data.get("oracle"), dict) else {}
    params = oracle.get("parameters")
    if isinstance(params, dict) and "command" in params:
        out["[oracle.parameters] command"] = params["command"]
    retries = oracle.get("retries")
    if isinstance(retries, list):
        for k, r in enumerate(retries, start=2):
            if isinstance(r, dict) and "command" in r:
                out[f"[oracle] retries (attempt {k}) command"] = r["command"]
    executor: dict[str, Any] = data["executor"] if isinstance(data.get("executor"), dict) else {}
    dask = executor.get("dask")
    if isinstance(dask, dict):
        for key in sorted(dask):
            out[f"[executor.dask] {key}"] = dask[key]
    return out


def _key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "alcsp" / "owner.key"


def _owner_key() -> bytes:
    """This user's secret for owner records (made on first use, mode 0600)."""
    path = _key_file()
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            try:
                os.link(tmp, path)  # atomic, and never replaces a key made meanwhile
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        key = path.read_text().strip()
    except OSError as exc:
        raise ValueError(
            f"cannot read or create the owner key {path} ({exc}); set "
            "XDG_CONFIG_HOME to a folder of yours that is writable"
        ) from None
    if len(key) < 32:
        raise ValueError(
            f"the owner key {path} is damaged; delete it (campaigns signed with "
            "it then need --trust-config once)"
        )
    return key.encode()


def _me() -> dict[str, Any]:
    uid = os.getuid()
    try:
        import pwd

        user = pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        user = os.environ.get("USER") or str(uid)
    return {"user": user, "uid": uid, "host": socket.gethostname()}


def _signature(commands: dict[str, Any]) -> str:
    text = json.dumps(commands, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(_owner_key(), text.encode(), hashlib.sha256).hexdigest()


def owner_record(config_text: str) -> dict[str, Any]:
    """The owner record of ``config_text`` written by this user on this machine now (the
    HMAC only when the config names commands: a key is needed only then)."""
    commands = config_commands(config_text)
    return {
        **_me(),
        "commands_hmac": _signature(commands) if commands else "",
        "signed": time.time(),
    }


def sign_config(store) -> None:
    """Record this user, here, as the writer of the store's config (its commands)."""
    store.set_meta(OWNER_KEY, json.dumps(owner_record(store.config_text)))


def _show(commands: dict[str, Any], limit: int = 600) -> str:
    text = "; ".join(f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in commands.items())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def untrusted_reason(store) -> str | None:
    """Why the commands of the store's config were not written by this user on this
    machine, or None when they were (or when it names none)."""
    commands = config_commands(store.config_text)
    if not commands:
        return None
    try:
        rec = json.loads(store.meta(OWNER_KEY) or "null")
    except ValueError:
        rec = None
    if not isinstance(rec, dict):
        return "the campaign has no owner record (made by an older alcsp, or elsewhere)"
    me = _me()
    if (rec.get("user"), rec.get("uid")) != (me["user"], me["uid"]):
        return f"user {rec.get('user')!r} (uid {rec.get('uid')}) wrote it, not you"
    if rec.get("host") != me["host"]:
        return f"it was written on host {rec.get('host')!r}, not on this one ({me['host']!r})"
    if not hmac.compare_digest(str(rec.get("commands_hmac", "")), _signature(commands)):
        return "it is not what you last ran here (changed without --config)"
    return None


def check_trust(store, directory: Path, trust: bool) -> None:
    """Before continuing a stored campaign: refuse (ValueError, one line) when its config
    names commands that this user did not write on this machine, unless ``trust``; a
    trusted config is signed for this user."""
    reason = untrusted_reason(store)
    if reason is None:
        return
    if not trust:
        raise ValueError(
            f"{directory}: the stored config would run "
            f"{_show(config_commands(store.config_text))}, but {reason}; if you trust "
            f"these commands, re-run with `alcsp run {directory} --trust-config`"
        )
    sign_config(store)


def check_campaign(directory: Path, new_config: bool) -> None:
    """Before a run writes anything (it holds the lock already): the campaign's database
    is sound (SQLite's integrity check), its stored config is one this alcsp reads (unless
    ``new_config`` replaces it) and its latest model, which the run continues from, loads.
    One-line errors that say what to do."""
    from alcsp.config import ConfigError, parse_config
    from alcsp.store import CampaignStore

    with CampaignStore.open_checked(directory, readonly=False) as store:
        if not new_config:
            try:
                parse_config(store.config_text, source=f"the stored config of {directory}")
            except ConfigError as exc:
                raise UserError(
                    f"{exc}; continue the campaign under a config this alcsp reads: "
                    f"`alcsp run {directory} --config CONFIG.toml`"
                ) from None
        latest = store.latest_model()
        path = None if latest is None else store.model_path(latest)
    if latest is None or path is None:
        return
    where = f"{directory}: the model of iteration {latest.iteration}, {path},"
    fix = "put the campaign's own file back (from a backup), or start a new campaign"
    if not path.is_file():
        raise UserError(f"{where} is missing (deleted or moved); {fix}")
    from alcsp.potential import load_model

    try:
        load_model(path)
    except Exception as exc:  # whatever the file holds: it is not the campaign's model
        raise UserError(
            f"{where} cannot be read ({type(exc).__name__}): it is damaged or was not "
            f"written by alcsp; {fix}"
        ) from None


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from alcsp.campaign import Campaign
    from alcsp.config import load_config
    from alcsp.lock import DirectoryLock
    from alcsp.store import DB_NAME

    console = Console(stderr=True)
    sink = _event_sink(args, console)
    say = sink.say

    target: Path = args.target
    # Unwound in reverse: the campaign (and its workers) closes before the lock is freed.
    with contextlib.ExitStack() as held:
        if target.is_dir():
            if not (target / DB_NAME).exists():
                raise ValueError(
                    f"{target} is a directory but holds no campaign ({DB_NAME} missing); "
                    f"give a campaign directory, or start one there with "
                    f"`alcsp run CONFIG.toml --dir {target}`"
                )
            held.enter_context(DirectoryLock.acquire(target))  # before anything is written
            text = None
            if args.config is not None:
                load_config(args.config)  # validate first
                text = args.config.read_text()
            check_campaign(target, new_config=text is not None)
            campaign = Campaign.open(
                target,
                events=sink,
                config_text=text,
                base_dir=args.config.parent if args.config else ".",
            )
            held.callback(campaign.close)
            if text is not None:  # the user's own config now: theirs to run
                sign_config(campaign.store)
            else:  # before anything runs
                check_trust(campaign.store, target, args.trust_config)
            directory = target
        elif target.is_file():
            config = load_config(target)
            directory = args.dir or Path("runs") / config.campaign.name
            text = target.read_text()
            if (directory / DB_NAME).exists():
                held.enter_context(DirectoryLock.acquire(directory))
                check_campaign(directory, new_config=False)
                campaign = Campaign.open(directory, events=sink)
                held.callback(campaign.close)
                if campaign.store.config_text != text:
                    raise ValueError(
                        f"{directory} already holds a campaign with a different config; "
                        f"continue it with `alcsp run {directory} --config {target}` (to "
                        "adopt the new config) or choose another --dir"
                    )
                sign_config(campaign.store)  # the user passed this very config
                say(f"{directory} already holds this campaign: continuing it")
            else:
                campaign = Campaign.create(directory, text, events=sink, base_dir=target.parent)
                try:  # another run may have taken the new campaign already: then it runs it
                    held.enter_context(DirectoryLock.acquire(directory))
                except BaseException:
                    campaign.close()
                    raise
                held.callback(campaign.close)
                sign_config(campaign.store)
        else:
            raise FileNotFoundError(f"{target} is neither a config file nor a campaign directory")
        say(f"campaign directory: {directory}")
        try:
            with sink.showing(
                campaign.config.campaign.name, campaign.config.campaign.max_iterations
            ):
                hull = campaign.run()
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: campaign and workers close
            interrupted: KeyboardInterrupt | None = exc
        else:
            interrupted = None
    if interrupted is not None:
        how = "terminated (SIGTERM)" if isinstance(interrupted, Terminated) else "interrupted"
        print(
            f"alcsp run: {how}; {directory} keeps everything finished so far: "
            f"continue it with `alcsp run {directory}`",
            file=sys.stderr,
        )
        return EXIT_TERMINATED if isinstance(interrupted, Terminated) else EXIT_INTERRUPTED
    if hull is None:
        print("no hull: no successful oracle label covers every element")
        return 1
    print(f"stable phases ({len(hull.stable)}):")
    for key, h in sorted(hull.stable.items(), key=lambda kv: kv[1]):
        print(
            f"  {key:<16} formation enthalpy {1000 * h:9.2f} meV/atom"
            f"  (structure {hull.structure_ids[key]})"
        )
    print(f"see `alcsp status {directory}` and `alcsp report {directory}`")
    return 0


class _Sink:
    """Where a run's events go: nowhere (``--quiet``), a live display (a terminal) or log
    lines (anything else). ``showing`` opens the live display for the run itself."""

    def __init__(self, quiet: bool, console: Console):
        from alcsp.commands.progress import LogLines, log_to_stderr

        self.quiet = quiet
        self.console = console
        self.live: LiveDisplay | None = None
        self.log = LogLines()
        if not quiet and not console.is_terminal:
            log_to_stderr()

    def __call__(self, event: Event) -> None:
        if self.quiet:
            return
        if self.live is not None:
            self.live(event)
        elif not self.console.is_terminal:
            self.log(event)
        else:
            line = describe(event)
            if line is not None:
                self.console.print(
                    f"{time.strftime('%H:%M:%S')} {line}", highlight=False, markup=False
                )

    def say(self, text: str) -> None:
        self(Notice(text))

    @contextlib.contextmanager
    def showing(self, name: str, max_iterations: int) -> Iterator[None]:
        if self.quiet or not self.console.is_terminal:
            yield
            return
        from alcsp.commands.progress import LiveDisplay

        with LiveDisplay(self.console, name, max_iterations) as live:
            self.live = live
            try:
                yield
            finally:
                self.live = None


def _event_sink(args: argparse.Namespace, console: Console) -> _Sink:
    return _Sink(bool(args.quiet), console)
