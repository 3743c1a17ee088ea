-- The statements of the hot path (see apps/tasks/transitions.py, which loads them by name).
--
-- A submission, a claim and a finish are one statement each: the task row and its event
-- together, atomic without a transaction and one round trip where BEGIN, UPDATE, INSERT and
-- COMMIT took four. Each returns the rows it moved; no row means the compare-and-set lost.
--
-- The task is found by its primary key alone and locked (`prior`), and the conditions are
-- checked on what was locked: with them on the updated row itself (status = 'running', say)
-- the planner may pick a partial index whose predicate they imply and walk every running or
-- queued task to find this one, once per transition (seen with a backlog of thousands).
--
-- The names in braces are filled once, when the file is loaded: {task_columns}, {task_values}
-- and {task_returning} from Task's fields; {to_state}, {from_states} and {assignments} from
-- the declared transition that runs the statement (state_machine.py).

-- name: insert_task
-- A new task and its first event.
WITH inserted AS (
    INSERT INTO tasks_task ({task_columns}) VALUES ({task_values})
    RETURNING id, status, attempts
)
INSERT INTO tasks_taskevent (task_id, created_at, from_status, to_status, actor_id, message, worker, attempt)
SELECT id, %(now)s, '', status, %(actor_id)s, %(message)s, '', attempts FROM inserted

-- name: claim_task
-- Move a claimable, due task to running for one run, with the claim's event; returns the row,
-- then whether its owner has an enabled webhook endpoint (read here, in the same round trip,
-- so that a quick run's finish need not ask; see transitions._may_announce).
--
-- Outside a transaction the claim's commit does not wait for its WAL flush
-- (synchronous_commit off for this statement's own transaction, `settings`): a claim lost in
-- a database crash only means that the task runs again, which the claim rules allow: the
-- first run's lease renewal finds itself fenced out and ends its process. Until every such
-- run has had a renewal (restart_grace, a lease), a task queued before the server started
-- cannot be claimed, nor is it re-dispatched (maintenance.py): a second run cannot begin
-- while a first one may still be going (docs/reliability.md). The finish commits
-- synchronously, and with it the claim's WAL, which comes first. Inside a caller's
-- transaction the setting is left as it is.
WITH settings AS (
    SELECT set_config(
        'synchronous_commit', CASE WHEN %(async_commit)s THEN 'off' ELSE current_setting('synchronous_commit') END, true
    ) AS synchronous_commit
), prior AS (
    SELECT id, status AS from_status, run_at, queued_at FROM tasks_task, settings
    WHERE id = %(id)s AND settings.synchronous_commit IS NOT NULL FOR UPDATE OF tasks_task
), moved AS (
    UPDATE tasks_task AS t
    SET status = '{to_state}', attempts = t.attempts + 1, run_id = %(run_id)s, worker = %(worker)s,
        lease_expires_at = %(lease_expires_at)s, started_at = %(now)s, updated_at = %(now)s,
        progress = %(progress)s, progress_message = %(progress_message)s
    FROM prior
    WHERE t.id = prior.id AND prior.from_status IN ({from_states})
        AND (prior.run_at IS NULL OR prior.run_at <= %(due)s)
        AND (
            coalesce(prior.queued_at, '-infinity') >= pg_postmaster_start_time()
            OR pg_postmaster_start_time() < %(now)s - %(restart_grace)s
        )
    RETURNING {task_returning}
), event AS (
    INSERT INTO tasks_taskevent (task_id, created_at, from_status, to_status, actor_id, message, worker, attempt)
    SELECT id, %(now)s, from_status, status, NULL, 'Attempt ' || attempts, worker, attempts FROM moved
)
SELECT moved.*, EXISTS (
    SELECT 1 FROM {endpoint_table} AS e WHERE e.owner_id = moved.owner_id AND e.enabled
) AS owner_has_endpoints
FROM moved

-- name: finish_run
-- Move a running task out of the run that still owns it (run_id), with the event; returns the row.
WITH prior AS (
    SELECT id, status AS from_status, run_id FROM tasks_task WHERE id = %(id)s FOR UPDATE
), moved AS (
    UPDATE tasks_task AS t
    SET status = '{to_state}', {assignments}
    FROM prior
    WHERE t.id = prior.id AND prior.from_status IN ({from_states}) AND prior.run_id = %(fence)s
    RETURNING {task_returning}
), event AS (
    INSERT INTO tasks_taskevent (task_id, created_at, from_status, to_status, actor_id, message, worker, attempt)
    SELECT id, %(now)s, from_status, status, NULL, %(message)s, %(worker)s, attempts FROM moved
)
SELECT * FROM moved
