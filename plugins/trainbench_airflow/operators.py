"""The operator that runs one benchmark case: the core's `run_case` inside an Airflow task.

It owns the trainer's process group for the task's lifetime, so `on_kill` (SIGTERM from
the UI, a cancelled DAG run, `execution_timeout`) stops the whole tree, and so does the death
of the worker that ran the task: no trainer outlives its task.  A stopped repeat is still a
row (`killed`, with the time it ran), and when Airflow stopped it the run's reports are
published with what the run has: a cancelled DAG run runs none of its later tasks.
"""

from __future__ import annotations

import os
import threading

from airflow.sdk import BaseOperator

from trainbench.measure.outcome import STOPPED_BY_AIRFLOW


class TrainCaseOperator(BaseOperator):
    """Train and measure one case x repeat; a crashed trainer is a result, not a task failure.

    The task fails (and retries) only when the result cannot be measured or stored: a busy
    device, or the results database unreachable (the raw JSON is already on disk then).
    """

    template_fields = ()  # the spec comes from planning, verbatim: paths must never be rendered as Jinja
    ui_color = "#c6e2ff"

    def __init__(self, *, spec: dict, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self._launch = None
        self._stopped = threading.Event()

    def execute(self, context):
        from trainbench import config
        from trainbench.planning import CaseSpec
        from trainbench.workflows import harness, pipeline

        spec = CaseSpec.from_dict(self.spec)
        context["case_label"] = spec.case.label

        def remember(launch):
            self._launch = launch

        # A busy GPU raises DeviceBusy, so Airflow retries later; the last try records `busy` instead.
        ti = context["ti"]
        final_attempt = ti.try_number > getattr(ti, "max_tries", self.retries)  # max_tries grows when cleared
        done = threading.Event()
        threading.Thread(target=self._watch_supervisor, args=(os.getppid(), done), daemon=True).start()
        cfg = config.load()
        try:
            result = harness.run_case(
                cfg, context["run_id"], spec, log=self.log.info, on_launch=remember, final_attempt=final_attempt
            )
        finally:
            done.set()
        if self._stopped.is_set():  # first: the supervisor SIGKILLs this process 5 s after its SIGTERM
            stopped_here = self._run_stopped(context) and pipeline.stop_run(cfg, context["run_id"])
            published = pipeline.publish(cfg, context["run_id"])
            self.log.info("stopped by Airflow: the run's reports hold what it measured, %s", published["markdown"])
            if stopped_here:
                from trainbench_airflow.notifiers import announce_stopped

                task = f"{ti.task_id}[{ti.map_index}]"
                announce_stopped(cfg, context["run_id"], ti.dag_id, task, self.log.info)
        else:
            from trainbench_airflow.notifiers import announce_quarantine

            announce_quarantine(cfg, context["run_id"], context["ti"].dag_id, spec.case.host, self.log.info)
        return {
            "case_key": result.case_key,
            "env_key": result.env_key,
            "status": result.status,
            "wall_s": result.wall_s,
        }

    def _run_stopped(self, context) -> bool:
        """Whether the whole DAG run was stopped (failed by hand), not only this task: then no later step runs."""
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        try:
            return RuntimeTaskInstance.get_dagrun_state(context["ti"].dag_id, context["run_id"]) == "failed"
        except Exception as exc:  # the API unreachable: the run's state is left as it was
            self.log.warning("could not read the DAG run's state: %s", exc)
            return False

    def _watch_supervisor(self, supervisor: int, done: threading.Event) -> None:
        """Airflow's task supervisor is this process's parent and runs in the worker; when the worker dies
        (SIGKILL, host lost), this process lives on in a process group of its own, and nobody would record
        the try or stop the trainer, which would hold the host's devices against the retry.  Stop it."""
        while not done.wait(0.5):
            if os.getppid() != supervisor:
                if self._launch is not None:
                    self._launch.kill("the Airflow worker running this task died")
                return

    def on_kill(self) -> None:
        """Runs in the SIGTERM handler, on the thread that waits for the trainer: it must return at once (the
        supervisor SIGKILLs this process 5 s after its SIGTERM), so the kill's grace period runs on a thread of
        its own while the main thread reaps the trainer and stores its row."""
        if self._launch is not None:
            self._stopped.set()
            reason = f"{STOPPED_BY_AIRFLOW} (the task or its DAG run was stopped, or execution_timeout)"
            threading.Thread(target=self._launch.kill, args=(reason,), daemon=True).start()
