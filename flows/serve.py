"""Run the case study on a cron schedule: a Prefect deployment served from this process."""

from __future__ import annotations

from flows.case_study import case_study
from flows.params import CaseStudyParams, DetectParams

NEEDS_SERVER = """\
`soundflow serve` needs a running Prefect server: the temporary one Prefect starts for a single
run cannot keep a schedule. In another terminal:

    prefect server start

then point this shell at it and serve again:

    export PREFECT_API_URL=http://127.0.0.1:4200/api
    soundflow serve ...

(or `prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api` once). With a work pool instead
of a serving process, see prefect.yaml: `prefect deploy --all` then `prefect worker start --pool soundflow`."""


def build_deployment(params: CaseStudyParams, *, cron: str, name: str):
    """The case-study deployment on `cron` with `params` as its default parameters."""
    return case_study.to_deployment(
        name=name,
        cron=cron,
        parameters={"params": params.model_dump(mode="json")},
        concurrency_limit=1,  # one case study at a time: runs share data/ caches and the CPU
        description=f"ESC-10 case study, preset {params.preset!r}, on cron {cron!r}",
        tags=["soundflow", params.preset],
    )


def api_url() -> str | None:
    """The Prefect API this process talks to (PREFECT_API_URL from the environment or the active profile)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def serve_case_study(params: CaseStudyParams, *, cron: str, name: str) -> None:
    """Serve the deployment until interrupted; stopping leaves the schedule active (runs wait for the next serve)."""
    from prefect import serve

    if not api_url():
        raise SystemExit(NEEDS_SERVER)
    serve(build_deployment(params, cron=cron, name=name), pause_on_shutdown=False)


def build_detect_deployment(params: DetectParams, *, cron: str, name: str):
    """The detect flow over a watched folder on `cron`: each run analyses only what its journal has not seen."""
    from flows.detect import detect

    return detect.to_deployment(
        name=name,
        cron=cron,
        parameters={"params": params.model_dump(mode="json")},
        concurrency_limit=1,  # one analysis at a time: they share the journal and the output folder
        description=f"detect with {params.model or 'the latest champion'} on {', '.join(params.paths)}, cron {cron!r}",
        tags=["soundflow", "detect"],
    )


def serve_detect(params: DetectParams, *, cron: str, name: str) -> None:
    """Serve the scheduled analysis until interrupted (the schedule stays active)."""
    from prefect import serve

    if not api_url():
        raise SystemExit(NEEDS_SERVER.replace("soundflow serve", "soundflow serve-detect"))
    serve(build_detect_deployment(params, cron=cron, name=name), pause_on_shutdown=False)
