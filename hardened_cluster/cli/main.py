"""The `hardened-cluster` command. Exit codes: 0 ok, 1 findings or drift, 2 invalid input."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from hardened_cluster.deliver.artifacts import ArtifactError
from hardened_cluster.deliver.bundle import BundleError
from hardened_cluster.errors import DeliveryError, InputError, SpecError
from hardened_cluster.spec.load import load_spec
from hardened_cluster.spec.model import LoadedSpec

EXIT_OK, EXIT_FINDINGS, EXIT_INVALID = 0, 1, 2


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code is 2 as well; keep its wording
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID)


def _spec_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", required=True, type=Path, help="inventories/<env>/cluster.yaml")


def _day2_args(parser: argparse.ArgumentParser) -> None:
    """--quiet and --json of a day-2 command (see _day2_progress)."""
    parser.add_argument("--quiet", action="store_true", help="no per-task progress")
    parser.add_argument("--json", action="store_true", help="print the JSON report (progress goes to stderr)")


def _days(text: str) -> int:
    """A whole number of days, 1 or more (argparse turns the error into exit 2 with the option's name)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days, 1 or more")
    return int(text)


def _state(loaded: LoadedSpec) -> Path:
    from hardened_cluster.secrets.store import state_dir

    return state_dir(loaded.spec.cluster.name)


def _plan(loaded: LoadedSpec):
    from hardened_cluster.plan.render import render_plan
    from hardened_cluster.secrets.store import resolve_secrets

    return render_plan(loaded, resolve_secrets(loaded, _state(loaded)))


def cmd_validate(args) -> int:
    loaded = load_spec(args.spec)
    spec = loaded.spec
    counts = {r: len(spec.nodes_with(r)) for r in ("etcd", "control-plane", "worker")}
    print(f"{args.spec}: valid: cluster {spec.cluster.name}, Kubernetes {spec.cluster.kubernetes_version}, "
          + ", ".join(f"{n} {r}" for r, n in counts.items()))
    return EXIT_OK


def cmd_render(args) -> int:
    plan = _plan(load_spec(args.spec))
    count = plan.write_tree(args.out)
    print(f"wrote {count} files for {len(plan.hosts)} hosts and {len(plan.manifests)} manifests under {args.out}")
    return EXIT_OK


def cmd_plan(args) -> int:
    plan = _plan(load_spec(args.spec))
    for name, host in plan.hosts.items():
        print(f"{name} ({', '.join(host.node.roles)}, {host.node.address}): {len(host.files)} files")
        for f in sorted(host.files.values(), key=lambda f: (f.role, f.path)):
            print(f"  {f.role:<18} {f.mode} {f.owner}:{f.group:<6} {f.path}  sha256:{f.sha256[:12]}")
        for note in host.notes:
            print(f"  note: {note}")
    print(f"cluster objects: {', '.join(sorted(plan.manifests)) or 'none'}")
    return EXIT_OK


def cmd_check(args) -> int:
    from hardened_cluster.verify.cis import check_plan
    from hardened_cluster.verify.cis_controls import summary

    findings = check_plan(_plan(load_spec(args.spec)))
    for f in findings:
        where = f" [{f.host}]" if f.host else ""
        print(f"{f.status:<14} {f.id:<8} {f.title}{where}" + (f"\n               {f.detail}" if f.detail and f.status != "PASS" else ""))
    counts = summary(findings)
    print("summary: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return EXIT_FINDINGS if counts.get("FAIL") else EXIT_OK


def cmd_certs(args) -> int:
    from hardened_cluster.verify.certs import lines, list_certificates

    report = list_certificates(_plan(load_spec(args.spec)))
    print(report.to_json() if args.json else "\n".join(lines(report)))
    return EXIT_FINDINGS if report.findings() else EXIT_OK


def _print_result(result, report: Path) -> None:
    from hardened_cluster.deliver.ansible import PHASES

    verb = "would change" if result.mode == "drift" else "changed"
    for name, host in result.hosts.items():
        state = "UNREACHABLE" if host.unreachable else "FAILED" if host.failed else "unchanged" if host.unchanged else "ok"
        print(f"{name:<12} {state:<11} ok={host.ok} {verb.replace(' ', '_')}={host.changed} failed={host.failed}")
        if result.mode == "drift":
            for change in host.changes:
                print(f"    drift: {change.describe()}")
        for error in host.errors:
            print(f"    error: {error}")
    for phase in PHASES:
        if phase in result.phases:
            print(f"phase {phase:<10} ran ({', '.join(PHASES[phase])})")
        elif phase in result.skipped_phases:
            print(f"phase {phase:<10} NOT RUN: {result.skipped_phases[phase]}")
    from hardened_cluster.verify.kube_bench import lines

    for line in lines(result.kube_bench):
        print(line)
    print(f"{result.mode}: {'succeeded' if result.succeeded else 'FAILED'} in {result.seconds}s; report: {report}")


def _converge(args, check: bool) -> int:
    from hardened_cluster.deliver.converge import converge

    loaded = load_spec(args.spec)
    progress = None if args.quiet else (lambda line: print(line, flush=True))
    result, report = converge(loaded, check=check, phases=args.phases, hosts=args.hosts, progress=progress,
                              full=args.full)
    _print_result(result, report)
    if not result.succeeded:
        return EXIT_FINDINGS
    if check and result.changed:
        return EXIT_FINDINGS
    return EXIT_OK


def cmd_apply(args) -> int:
    if args.phases is None or "kubernetes" in args.phases:
        from hardened_cluster.operations import upgrade

        from hardened_cluster.deliver import membership

        loaded = load_spec(args.spec)
        # Before the running version is asked for: a membership apply cannot change is refused untouched.
        membership.refuse_unsupported(membership.applied(_state(loaded)), loaded)
        kube_nodes = {n.name for n in loaded.spec.nodes if {"control-plane", "worker"} & set(n.roles)}
        # A spec one minor above the running cluster is an upgrade (exit 2 for any other step).
        if (args.hosts is None or kube_nodes & set(args.hosts)) and loaded.spec.runtimes.artifacts != "distro":
            running = upgrade.pending(loaded)
            if running is not None:
                print(f"cluster.kubernetes_version {loaded.spec.cluster.kubernetes_version}: the cluster runs "
                      f"{running}; upgrading it", flush=True)
                return _upgrade(args, loaded, running)
    return _converge(args, check=False)


def _upgrade(args, target: LoadedSpec, running: str | None = None) -> int:
    from hardened_cluster.operations import upgrade

    args.json = getattr(args, "json", False)  # apply has no --json
    say, tasks = _day2_progress(args)
    report, path = upgrade.upgrade(target, _state(target), progress=say, tasks=tasks, running=running)
    return _day2_result(args, report, lambda: (
        f"upgrade {report.from_version} -> {report.to_version}: "
        f"{'succeeded' if report.succeeded else 'FAILED; rerun to continue'} in {report.seconds}s; report: {path}"))


def cmd_upgrade(args) -> int:
    from hardened_cluster.operations import upgrade

    loaded = load_spec(args.spec)
    # Before any host is contacted: the step from the spec's release, and the target spec itself.
    issue = upgrade.step_issue(loaded.spec.cluster.kubernetes_version, args.to)
    if issue:
        raise SpecError([issue], f"{args.spec} (--to {args.to})")
    target = upgrade.target_spec(loaded, args.to, args.bundle)
    code = _upgrade(args, target)
    if code == EXIT_OK and not getattr(args, "json", False):
        bundle = f" and runtimes.bundle: {target.spec.runtimes.bundle}" if target.spec.runtimes.bundle else ""
        print(f"now set cluster.kubernetes_version: \"{args.to}\"{bundle} in {args.spec}")
    return code


def cmd_drift(args) -> int:
    return _converge(args, check=True)


def _day2_progress(args) -> tuple[Callable[[str], None], Callable[[str], None] | None]:
    """A day-2 command's lines per step and host (to stderr under --json), and the converges' task lines."""
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else (lambda line: print(line, flush=True))
    return say, None if args.quiet or args.json else say


def _day2_result(args, report, summary: Callable[[], str]) -> int:
    """The JSON report under --json, else its error and the one-line summary; exit 0 or 1."""
    if args.json:
        print(report.to_json(), end="")
    else:
        if getattr(report, "error", None):
            print(f"error: {report.error}")
        print(summary())
    return EXIT_OK if report.succeeded else EXIT_FINDINGS


def cmd_rotate_encryption_key(args) -> int:
    from hardened_cluster.operations.key_rotation import rotate_encryption_key

    loaded = load_spec(args.spec)
    say, tasks = _day2_progress(args)
    report, path = rotate_encryption_key(loaded, state=_state(loaded), progress=say, tasks=tasks)
    outcome = (f"succeeded; new key {report.new_key}, removed {', '.join(report.old_keys)}" if report.succeeded
               else "FAILED; rerun the command to continue the rotation")
    return _day2_result(args, report, lambda: f"rotate encryption-key: {outcome} in {report.seconds}s; report: {path}")


def cmd_rotate_kubeadm_certs(args) -> int:
    from hardened_cluster.operations.cert_renewal import renew_kubeadm_certs

    loaded = load_spec(args.spec)
    say, tasks = _day2_progress(args)
    report = renew_kubeadm_certs(loaded, _state(loaded), within_days=args.within, progress=say, tasks=tasks)
    count = sum(len(names) for names in report.renewed.values())
    return _day2_result(args, report, lambda: (
        f"rotate kubeadm-certs: {'succeeded' if report.succeeded else 'FAILED'}; {count} renewed "
        f"in {report.seconds}s; report: {report.report}"))


def cmd_restore_etcd(args) -> int:
    from hardened_cluster.operations.etcd_restore import check_snapshot_name, restore_etcd

    check_snapshot_name(args.snapshot)  # before the spec's secrets or any host
    loaded = load_spec(args.spec)
    say, tasks = _day2_progress(args)
    report, path = restore_etcd(loaded, snapshot=args.snapshot, state=_state(loaded), progress=say, tasks=tasks)
    return _day2_result(args, report, lambda: (
        f"restore etcd: {'succeeded' if report.succeeded else 'FAILED'} from {report.snapshot} "
        f"in {report.seconds}s; report: {path}"))


def cmd_artifacts_pin(args) -> int:
    from hardened_cluster.deliver.artifacts import pin

    block = pin(args.kubernetes)
    print("# Review, then paste under `kubernetes:` in artifacts/manifest.yaml (digests from upstream's checksum files)")
    print(block, end="")
    return EXIT_OK


def cmd_artifacts_build(args) -> int:
    from hardened_cluster.deliver import bundle

    bundle.build(args.kubernetes, args.out, progress=lambda line: print(line, flush=True))
    return EXIT_OK


def cmd_lab(args) -> int:
    from hardened_cluster.cli import lab as lab_cli

    return lab_cli.run(args)


def cmd_demo(args) -> int:
    from hardened_cluster.cli import demo

    return demo.run(args.spec, keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="hardened-cluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, func, help_ in (
        ("validate", cmd_validate, "validate a cluster spec"),
        ("plan", cmd_plan, "show per host which files will be placed"),
        ("check", cmd_check, "CIS Kubernetes Benchmark checks of the rendered plan"),
    ):
        p = sub.add_parser(name, help=help_)
        _spec_arg(p)
        p.set_defaults(func=func)
    p = sub.add_parser("render", help="write the per-host file trees for review")
    _spec_arg(p)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_render)
    for name, func, help_ in (
        ("apply", cmd_apply, "converge the hosts to the plan"),
        ("drift", cmd_drift, "report per host what differs from the plan (exit 1 on drift)"),
    ):
        p = sub.add_parser(name, help=help_)
        _spec_arg(p)
        p.add_argument("--phases", type=lambda v: v.split(","), help="comma list of hosts,etcd,runtime,kubernetes,objects")
        p.add_argument("--hosts", type=lambda v: v.split(","), help="comma list of node names")
        p.add_argument("--quiet", action="store_true", help="no per-task progress")
        p.add_argument("--full", action="store_true",
                       help="run the roles on every host, also those unchanged since their last successful apply")
        p.set_defaults(func=func)
    p = sub.add_parser("upgrade", help=(
        "upgrade the live cluster one Kubernetes minor (kubeadm upgrade, control planes then workers one at a "
        "time, each drained); apply of a spec one minor above the cluster does the same"))
    _spec_arg(p)
    p.add_argument("--to", required=True, help="the Kubernetes release to upgrade to, one minor above the spec's")
    p.add_argument("--bundle", type=Path,
                   help="the release's bundle directory (runtimes.artifacts: bundle; default: the cache's for --to)")
    _day2_args(p)
    p.set_defaults(func=cmd_upgrade)
    p = sub.add_parser("certs", help="every certificate of the cluster (state store and nodes) with its expiry; "
                                     "exit 1 when one is due for renewal or a node holds a stale copy")
    _spec_arg(p)
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=cmd_certs)
    p = sub.add_parser("rotate", help="day-2 rotations on the live cluster")
    rotate_sub = p.add_subparsers(dest="rotate_command", required=True, parser_class=Parser)
    key = rotate_sub.add_parser("encryption-key", help=(
        "a new encryption key for Secrets at rest: added read-only, made first, every object rewritten, "
        "the old keys removed; an interrupted rotation continues when rerun"))
    _spec_arg(key)
    _day2_args(key)
    key.set_defaults(func=cmd_rotate_encryption_key)
    renew = rotate_sub.add_parser("kubeadm-certs", help=(
        "renew kubeadm's certificates and kubeconfigs on every control plane (kubeadm certs renew) and restart "
        "the static pods, one control plane at a time; apply does it for those within the renewal window"))
    _spec_arg(renew)
    renew.add_argument("--within", type=_days, metavar="DAYS",
                       help="only those that expire within DAYS days (default: every one)")
    _day2_args(renew)
    renew.set_defaults(func=cmd_rotate_kubeadm_certs)
    p = sub.add_parser("restore", help="disaster recovery on the live cluster")
    restore_sub = p.add_subparsers(dest="restore_command", required=True, parser_class=Parser)
    etcd = restore_sub.add_parser("etcd", help=(
        "rebuild every etcd member from a snapshot: the API servers stopped first, brought back one at a time "
        "(/readyz), then every node Ready"))
    _spec_arg(etcd)
    etcd.add_argument("--snapshot", metavar="NAME",
                      help="a snapshot file name in etcd.snapshot.directory on the first etcd member (default: the newest)")
    _day2_args(etcd)
    etcd.set_defaults(func=cmd_restore_etcd)
    p = sub.add_parser("artifacts", help="the pinned binaries the Kubernetes phases install")
    art_sub = p.add_subparsers(dest="artifacts_command", required=True, parser_class=Parser)
    pin_parser = art_sub.add_parser("pin", help="print manifest pins for a Kubernetes version (needs the internet)")
    pin_parser.add_argument("--kubernetes", required=True, help="e.g. 1.36.2")
    pin_parser.set_defaults(func=cmd_artifacts_pin)
    build_parser_ = art_sub.add_parser("build", help="build the offline bundle from the pinned Go modules (needs Go)")
    build_parser_.add_argument("--kubernetes", default=None, help="Kubernetes version (default: the bundle's own)")
    build_parser_.add_argument("--out", type=Path, help="bundle directory (default: under the cache)")
    build_parser_.set_defaults(func=cmd_artifacts_build)
    p = sub.add_parser("lab", help="the built-in lab: isolated test hosts on this machine (root, Linux)")
    lab_sub = p.add_subparsers(dest="lab_command", required=True, parser_class=Parser)
    up = lab_sub.add_parser("up", help="start the lab nodes of a spec (or N generic nodes)")
    up.add_argument("--spec", type=Path, help="take nodes from this spec and write known_hosts beside it")
    up.add_argument("--nodes", type=int, help="N generic nodes node-1..node-N (when no --spec)")
    lab_sub.add_parser("down", help="stop every node and remove everything the lab made")
    lab_sub.add_parser("status", help="show the nodes and their state")
    p.set_defaults(func=cmd_lab)
    p = sub.add_parser("demo", help="lab up, apply, verify, drift: the main job on the built-in lab")
    p.add_argument("--spec", type=Path, default=Path("inventories/lab/cluster.yaml"))
    p.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpecError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_INVALID
    except InputError as exc:
        print(f"error: {exc} (nothing was changed)", file=sys.stderr)
        return EXIT_INVALID
    except (DeliveryError, ArtifactError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FINDINGS
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as other Unix tools do.
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
