-- Reads about the concurrency limits for the admin (apps/tasks/selectors.py loads them by name).

-- name: owners_with_work
-- The owners with claimable tasks (queued or retrying), by a loose scan of task_claimable_owner:
-- one index probe per (queue, owner) pair, however long each owner's backlog, where a DISTINCT
-- would read the index entry of every claimable task. {claimable} is the index's predicate.
WITH RECURSIVE pairs AS (
    (
        SELECT queue, owner_id FROM tasks_task
        WHERE status IN ({claimable}) ORDER BY queue, owner_id LIMIT 1
    )
    UNION ALL
    SELECT next_pair.queue, next_pair.owner_id FROM pairs CROSS JOIN LATERAL (
        SELECT t.queue, t.owner_id FROM tasks_task AS t
        WHERE t.status IN ({claimable}) AND (t.queue, t.owner_id) > (pairs.queue, pairs.owner_id)
        ORDER BY t.queue, t.owner_id LIMIT 1
    ) AS next_pair
)
SELECT DISTINCT owner_id FROM pairs

-- name: waiting_by_kind
-- Claimable, due tasks of each kind of %(keys)s, counted up to %(cap)s each (task_dispatched or
-- task_kind_status_created, then the row for run_at): a backlog of a million costs no more than
-- the cap. Due as the claim has it: run_at passed, with CLAIM_GRACE (%(due)s).
SELECT scopes.key, (
    SELECT count(*) FROM (
        SELECT 1 FROM tasks_task AS t
        WHERE t.kind = scopes.key AND t.status IN ({claimable}) AND (t.run_at IS NULL OR t.run_at <= %(due)s)
        LIMIT %(cap)s
    ) AS capped
) FROM unnest(%(keys)s::text[]) AS scopes(key)

-- name: waiting_by_owner
-- The same for each owner of %(keys)s (from the owner's unfinished tasks, task_unfinished_owner).
SELECT scopes.key, (
    SELECT count(*) FROM (
        SELECT 1 FROM tasks_task AS t
        WHERE t.owner_id = scopes.key AND t.status IN ({claimable}) AND (t.run_at IS NULL OR t.run_at <= %(due)s)
        LIMIT %(cap)s
    ) AS capped
) FROM unnest(%(keys)s::bigint[]) AS scopes(key)
