"""The metric names the Grafana dashboard may use: TaskFlow's own.

Shared by the deployment-file checks (the dashboard charts every one, and nothing else) and
the metrics tests (web and worker really export every one).
"""

KNOWN_METRICS = {
    "taskflow_http_request_seconds_count",
    "taskflow_http_request_seconds_bucket",
    "taskflow_tasks_submitted_total",
    "taskflow_tasks_started_total",
    "taskflow_tasks_succeeded_total",
    "taskflow_tasks_failed_total",
    "taskflow_tasks_retried_total",
    "taskflow_task_run_seconds_bucket",
    "taskflow_task_queue_wait_seconds_bucket",
    "taskflow_queue_depth",
    "taskflow_tasks_by_status",
}
