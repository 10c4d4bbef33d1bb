"""The command line: validate, plan, apply, add-version, schema, status."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pydantic import ValidationError

from contracts.redact import mask_credentials
from contracts.registry import Stage
from reconciler import render, spec
from reconciler.errors import PlanFileError, ReconcilerError, SettingsError, SpecError
from reconciler.logs import configure
from reconciler.settings import ReconcilerSettings
from reconciler.sources import is_uri

if TYPE_CHECKING:
    from reconciler.plan import Plan
    from reconciler.registry import MlflowRegistry

log = logging.getLogger("reconciler")

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; 2 means "changes" here (plan), so errors exit 1."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, mask_credentials(f"{self.prog}: error: {message}\n"))


def _parser(settings: ReconcilerSettings) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m reconciler",
        description="models.yaml is the truth: make the MLflow Model Registry match it.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def with_file(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
        command.add_argument(
            "-f", "--file", type=Path, default=settings.models_file, help="models.yaml"
        )
        return command

    validate = with_file(commands.add_parser("validate", help="check models.yaml"))
    validate.add_argument(
        "--no-files", action="store_true", help="skip checking repository files and sha256"
    )
    plan = with_file(commands.add_parser("plan", help="show what apply would change"))
    plan.add_argument("--format", choices=sorted(render.RENDERERS), default="text")
    plan.add_argument("--out", type=Path, help="also save the plan as JSON (for apply --plan)")
    apply = with_file(commands.add_parser("apply", help="make MLflow match models.yaml"))
    apply.add_argument("--format", choices=sorted(render.RENDERERS), default="text")
    apply.add_argument(
        "--plan", type=Path, help="a plan saved by plan --out: refuse if MLflow has moved since"
    )
    add = with_file(commands.add_parser("add-version", help="add a version to models.yaml"))
    add.add_argument("--model", required=True)
    add.add_argument(
        "--source",
        required=True,
        help="a repository .onnx file or directory, or a URI (downloaded to compute its sha256)",
    )
    add.add_argument("--stage", choices=[stage.value for stage in Stage])
    add.add_argument("--alias", action="append", default=[], help="repeatable")
    add.add_argument("--sha256", help="checked against the source's (default: computed)")
    add.add_argument(
        "--sample-input",
        metavar="JSON",
        help="input for the promotion gate's inference, as JSON: rows like "
        "'[[5.1, 3.5, 1.4, 0.2]]', or '{\"input name\": rows}' for several inputs",
    )
    commands.add_parser("schema", help="print the JSON Schema of models.yaml")
    status = with_file(
        commands.add_parser("status", help="wait until servers serve the declared versions")
    )
    status.add_argument(
        "--server",
        action="append",
        required=True,
        help="a server URL (repeatable); a name resolving to several addresses (a headless "
        "Service) means every address is checked. Token: RECONCILER_SERVER_TOKEN",
    )
    status.add_argument(
        "--alias", help="the alias the sidecars follow (default: the Production stage)"
    )
    status.add_argument("--timeout", type=float, default=120.0)
    status.add_argument("--interval", type=float, default=1.0)
    promote = with_file(
        commands.add_parser(
            "promote",
            help="advance, promote or roll back the running progressive rollouts",
        )
    )
    promote.add_argument(
        "--metrics",
        action="append",
        default=[],
        help="a server pod's /metrics URL (repeatable; a name resolving to several addresses "
        "means every address)",
    )
    promote.add_argument("--format", choices=sorted(render.PROMOTE_RENDERERS), default="text")
    promote.add_argument("--out", type=Path, help="also save the report as JSON")
    promote.add_argument(
        "--interval", type=float, default=5.0, help="seconds between two scrapes of every pod"
    )
    promote.add_argument(
        "--timeout",
        type=float,
        help="stop after this many seconds, rollouts left running (exit 3); the next promote "
        "resumes them",
    )
    return parser


def _registry(settings: ReconcilerSettings) -> MlflowRegistry:
    # The reconciler retries with its own backoff; MLflow's inner retries would multiply it.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(settings.request_timeout))
    # MLflow prints "View run at <tracking URI>" (credentials included) where the plan goes.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # CI and clusters are offline
    from reconciler.registry import MlflowRegistry, RetryPolicy

    policy = RetryPolicy(settings.retries, settings.backoff_seconds)
    return MlflowRegistry(settings.tracking_uri, policy, settings.upload_experiment)


def _print(text: str) -> None:
    """Standard output; a URI's credentials never reach it (a source, a server URL)."""
    sys.stdout.write(mask_credentials(text))
    sys.stdout.flush()


def _error(text: str) -> None:
    """Standard error; MLflow's exception texts embed the tracking URI with its credentials."""
    sys.stderr.write(mask_credentials(text))
    sys.stderr.flush()


def run(args: argparse.Namespace, settings: ReconcilerSettings) -> int:
    if args.command == "schema":
        _print(spec.json_schema())
        return EXIT_OK
    if args.command == "add-version":
        from reconciler.edit import add_version, sample_input_from_json

        sample = None if args.sample_input is None else sample_input_from_json(args.sample_input)
        added = add_version(
            args.file,
            model=args.model,
            source=args.source,
            stage=Stage(args.stage) if args.stage else None,
            aliases=args.alias,
            sha256=args.sha256,
            downloader=_registry(settings) if is_uri(args.source) else None,
            sample_input=sample,
        )
        entry = added.entry
        _print(f"added to {args.file}: {args.model} {entry['source']} sha256 {entry['sha256']}\n")
        _print("".join(f"  and in {args.file}: {args.model} {words}\n" for words in added.also))
        return EXIT_OK
    if args.command == "validate":
        desired = spec.load(args.file, check_files=not args.no_files, lock_name=settings.lock_name)
        count = sum(len(model.versions) for model in desired.file.models)
        _print(f"{args.file} is valid: {len(desired.file.models)} models, {count} versions\n")
        return EXIT_OK
    desired = spec.load(args.file, lock_name=settings.lock_name)
    registry = _registry(settings)
    names = [model.name for model in desired.file.models]
    if args.command == "plan":
        from reconciler.plan import make_plan
        from reconciler.probe import SignatureProbe

        state = registry.read(names)
        probe = SignatureProbe(registry, desired, time_limit=settings.gate_timeout_seconds)
        plan = make_plan(desired.file, state, probe.evidence(state))
        _print(render.RENDERERS[args.format](plan))
        if args.out:
            args.out.write_text(render.json_text(plan))
        return EXIT_CHANGES if plan.has_changes else EXIT_OK
    if args.command == "apply":
        return _apply(args, settings, desired, registry)
    if args.command == "promote":
        return _promote(args, settings, desired, registry)
    if args.command == "status":
        from reconciler.status import (
            declared_versions,
            http_fetcher,
            rollout_lines,
            wait_for_rollout,
        )

        current = registry.read(names)
        expected = declared_versions(desired.file, current, alias=args.alias)
        _print("".join(f"{line}\n" for line in rollout_lines(desired.file, current)))
        token = settings.server_token.get_secret_value() if settings.server_token else None
        seen = wait_for_rollout(
            args.server,
            expected,
            timeout=args.timeout,
            interval=args.interval,
            fetch=http_fetcher(token),
        )
        for observation in seen:
            _print(f"ok {observation.server} {observation.model} v{observation.served}\n")
        return EXIT_OK
    raise AssertionError(args.command)


def _saved_plan(path: Path) -> Plan:
    try:
        return render.from_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanFileError(str(path), exc.strerror or str(exc)) from None
    except UnicodeDecodeError:
        raise PlanFileError(str(path), "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise PlanFileError(str(path), f"not JSON (line {exc.lineno}: {exc.msg})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PlanFileError(str(path), f"not a saved plan ({type(exc).__name__}: {exc})") from None


def _settings() -> ReconcilerSettings:
    """ReconcilerSettings from the environment; SettingsError naming each bad variable."""
    try:
        settings = ReconcilerSettings()
    except ValidationError as exc:
        raise SettingsError([
            f"{_variable(error['loc'])}: {error['msg']}" for error in exc.errors()
        ]) from None  # fmt: skip
    if settings.log_level.upper() not in LOG_LEVELS:
        shown = ", ".join(LOG_LEVELS)
        raise SettingsError([f"RECONCILER_LOG_LEVEL: {settings.log_level!r} is not one of {shown}"])
    return settings


def _variable(loc: Sequence[str | int]) -> str:
    """The environment variable of a settings field (aliases are already variable names)."""
    name = "_".join(str(part) for part in loc).upper()
    return name if name.startswith(("RECONCILER_", "MLFLOW_")) else f"RECONCILER_{name}"


def _apply(
    args: argparse.Namespace,
    settings: ReconcilerSettings,
    desired: spec.Desired,
    registry: MlflowRegistry,
) -> int:
    from reconciler.apply import Audit, LockOptions, apply

    expected = _saved_plan(args.plan) if args.plan else None
    result = apply(
        registry,
        desired,
        Audit(applied_by=settings.applied_by, git_commit=settings.git_commit),
        LockOptions(
            name=settings.lock_name,
            wait_seconds=settings.lock_wait_seconds,
            lease_seconds=settings.lock_lease_seconds,
        ),
        expected=expected,
        gate_seconds=settings.gate_timeout_seconds,
    )
    _print(render.RENDERERS[args.format](result.first_plan))
    if args.format == "text":
        _print("".join(f"done: {item}\n" for item in result.done))
        _print("".join(f"FAILED: {item}\n" for item in result.failures))
        _print(f"After apply: {result.final_plan.summary()}\n")
    if result.failures:
        if args.format != "text":
            _error("".join(f"FAILED: {item}\n" for item in result.failures))
        _error(f"apply: {len(result.failures)} failure(s); {len(result.done)} change(s) done\n")
        return EXIT_ERROR
    log.info("apply finished", extra={"done": len(result.done)})
    return EXIT_OK


def _promote(
    args: argparse.Namespace,
    settings: ReconcilerSettings,
    desired: spec.Desired,
    registry: MlflowRegistry,
) -> int:
    from reconciler.apply import LockOptions, default_holder
    from reconciler.promote import PromoteOptions, Promoter, exit_code

    options = PromoteOptions(
        lock=LockOptions(
            name=settings.lock_name,
            wait_seconds=settings.lock_wait_seconds,
            lease_seconds=settings.lock_lease_seconds,
        ),
        holder=f"promote {default_holder()}",
        interval=args.interval,
        timeout=args.timeout,
    )
    outcomes = Promoter(registry, desired, args.metrics, options).run()
    _print(render.PROMOTE_RENDERERS[args.format](outcomes))
    if args.out:
        args.out.write_text(render.promote_json(outcomes))
    code = exit_code(outcomes)
    if code == EXIT_ERROR:
        _error("promote: a progressive rollout was rolled back (the report says why)\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = _settings()
    except SettingsError as exc:
        _error(f"error: {exc}\n")
        return EXIT_ERROR
    configure(settings.log_level)
    unknown = ReconcilerSettings.unknown_variables(os.environ)
    if unknown:  # a typo in a CI file: contracts.settings says why it is not an error
        log.warning("ignoring %s: not settings of the reconciler (a typo?)", ", ".join(unknown))
    args = _parser(settings).parse_args(argv)
    try:
        return run(args, settings)
    except SpecError as exc:
        _error(f"{exc}\n")
        return EXIT_ERROR
    except ReconcilerError as exc:  # said once, in words: it says what to do
        _error(f"error: {exc}\n")
        return EXIT_ERROR
    except Exception:
        log.exception("unexpected failure")
        return EXIT_ERROR
