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
    SELECT id, status AS from_status, run_at, queued_at, owner_id, queue FROM tasks_task, settings
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
        ){alone}
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

-- name: fair_choice
-- A fragment of fair_candidates (fairness.py), not a statement: the claimable,
-- due tasks of one queue that may run now, the fairest first (`turn`, then priority, then age).
--
-- The owners with claimable work are found by a loose scan of task_claimable_owner (one probe
-- per owner, however long each owner's backlog), and each owner's next few tasks by priority,
-- then age, from the same index. An owner's turn for its n-th next task is its running tasks
-- plus n: taken in turn order, that is round-robin across owners, the least served first.
-- The next few are {per_owner} at least, and more when few owners share the {spread}
-- candidates: concurrent claims skip each other's (SKIP LOCKED), so one owner's backlog
-- needs as many candidates as there are claims at once.
-- Tasks of a kind at its limit are left out, and an owner at its limit offers none; the
-- limits come as arrays ({limited_kinds} with {kind_limits}, {limited_owners} with
-- {owner_limits}, and {every_owner_limit} or NULL), the running counts from this snapshot.
-- The claim rules of claim_task hold: due (run_at), and after a database restart nothing
-- queued before it for a lease (transitions.restart_grace). The candidates are the first
-- {spread} (the LIMIT also tells the planner how few rows the claim then joins by id).
running AS MATERIALIZED (
    SELECT owner_id, kind FROM tasks_task WHERE status = 'running'
), owner_running AS (
    SELECT owner_id, count(*) AS n FROM running GROUP BY owner_id
), full_kinds AS (
    SELECT coalesce(array_agg(limits.kind), '{{}}') AS kinds
    FROM unnest(%(limited_kinds)s::text[], %(kind_limits)s::int[]) AS limits(kind, n)
    WHERE (SELECT count(*) FROM running WHERE running.kind = limits.kind) >= limits.n
), owners AS (
    (
        SELECT owner_id FROM tasks_task
        WHERE queue = %(queue)s AND status IN ({claimable}) ORDER BY owner_id LIMIT 1
    )
    UNION ALL
    SELECT (
        SELECT t.owner_id FROM tasks_task AS t
        WHERE t.queue = %(queue)s AND t.status IN ({claimable}) AND t.owner_id > owners.owner_id
        ORDER BY t.owner_id LIMIT 1
    )
    FROM owners WHERE owners.owner_id IS NOT NULL
), served AS (
    SELECT owners.owner_id, coalesce(owner_running.n, 0) AS running,
        coalesce(limits.n, %(every_owner_limit)s::int) AS owner_limit
    FROM owners
    LEFT JOIN owner_running ON owner_running.owner_id = owners.owner_id
    LEFT JOIN unnest(%(limited_owners)s::bigint[], %(owner_limits)s::int[]) AS limits(owner_id, n)
        ON limits.owner_id = owners.owner_id
    WHERE owners.owner_id IS NOT NULL
), candidates AS (
    SELECT pick.id, pick.owner_id, pick.kind, served.running + pick.nth AS turn, pick.rank, pick.created_at
    FROM served CROSS JOIN LATERAL (
        SELECT next_tasks.*, row_number() OVER (ORDER BY next_tasks.rank, next_tasks.created_at) AS nth
        FROM (
            SELECT t.id, t.owner_id, t.kind, {rank} AS rank, t.created_at
            FROM tasks_task AS t, full_kinds
            WHERE t.queue = %(queue)s AND t.owner_id = served.owner_id AND t.status IN ({claimable})
                AND (t.run_at IS NULL OR t.run_at <= %(due)s)
                AND t.kind <> ALL (full_kinds.kinds)
                AND (
                    coalesce(t.queued_at, '-infinity') >= pg_postmaster_start_time()
                    OR pg_postmaster_start_time() < %(now)s - %(restart_grace)s
                )
            ORDER BY {rank}, t.created_at
            LIMIT greatest(0, least(
                (SELECT greatest(%(per_owner)s, %(spread)s / count(*)) FROM served),
                coalesce(served.owner_limit - served.running, %(spread)s)
            ))
        ) AS next_tasks
    ) AS pick
    ORDER BY turn, pick.rank, pick.created_at
    LIMIT %(spread)s
)

-- name: alone
-- A condition of claim_task for the fair claim's quick path (fairness.py): the named task's
-- owner is the only one with claimable work in its queue, so it has nobody to be fair to, and
-- the broker already hands its wake-ups out by priority, then age. Two probes of
-- task_claimable_owner, one on each side of the owner, each the first entry in the index's
-- order: written as NOT EXISTS, a generic plan made from a quiet queue's statistics read the
-- whole backlog through task_unfinished_owner instead, for every claim.
AND (
    SELECT other.owner_id FROM tasks_task AS other
    WHERE other.queue = prior.queue AND other.status IN ({from_states}) AND other.owner_id < prior.owner_id
    ORDER BY other.queue DESC, other.owner_id DESC LIMIT 1
) IS NULL AND (
    SELECT other.owner_id FROM tasks_task AS other
    WHERE other.queue = prior.queue AND other.status IN ({from_states}) AND other.owner_id > prior.owner_id
    ORDER BY other.queue, other.owner_id LIMIT 1
) IS NULL

-- name: claim_listed
-- claim_task for the first still-claimable task of a list the claiming process ranked with
-- fair_candidates (fairness.py): `ids`, the fairest first, as a uuid[] literal. Each id is a
-- probe by primary key, so the plan does not depend on the table's statistics nor on the dead
-- index entries of claimed tasks; the ranking that does runs once for many claims. Ids that
-- other claims took meanwhile, or hold now (SKIP LOCKED), are passed over; the claim rules
-- of claim_task are checked on the locked row.
WITH settings AS (
    SELECT set_config(
        'synchronous_commit', CASE WHEN %(async_commit)s THEN 'off' ELSE current_setting('synchronous_commit') END, true
    ) AS synchronous_commit
), prior AS (
    SELECT t.id, t.status AS from_status
    FROM unnest(%(ids)s::uuid[]) WITH ORDINALITY AS listed(id, n)
    JOIN tasks_task AS t ON t.id = listed.id, settings
    WHERE settings.synchronous_commit IS NOT NULL AND t.status IN ({from_states})
        AND (t.run_at IS NULL OR t.run_at <= %(due)s)
        AND (
            coalesce(t.queued_at, '-infinity') >= pg_postmaster_start_time()
            OR pg_postmaster_start_time() < %(now)s - %(restart_grace)s
        )
    ORDER BY listed.n
    LIMIT 1
    FOR UPDATE OF t SKIP LOCKED
), moved AS (
    UPDATE tasks_task AS t
    SET status = '{to_state}', attempts = t.attempts + 1, run_id = %(run_id)s, worker = %(worker)s,
        lease_expires_at = %(lease_expires_at)s, started_at = %(now)s, updated_at = %(now)s,
        progress = %(progress)s, progress_message = %(progress_message)s
    FROM prior
    WHERE t.id = prior.id
    RETURNING {task_returning}
), event AS (
    INSERT INTO tasks_taskevent (task_id, created_at, from_status, to_status, actor_id, message, worker, attempt)
    SELECT id, %(now)s, from_status, status, NULL, 'Attempt ' || attempts, worker, attempts FROM moved
)
SELECT moved.*, EXISTS (
    SELECT 1 FROM {endpoint_table} AS e WHERE e.owner_id = moved.owner_id AND e.enabled
) AS owner_has_endpoints
FROM moved

-- name: fair_candidates
-- fair_choice's candidates, the fairest first: (id, owner_id, kind).
WITH RECURSIVE {fair_choice}
SELECT id, owner_id, kind FROM candidates ORDER BY turn, rank, created_at
