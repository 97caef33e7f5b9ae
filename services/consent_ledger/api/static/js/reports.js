// Violations over time (CONTRACT §8, GET /v1/reports/violations), and the same
// figures computed here from GET /v1/violations when the API is older than the
// report endpoint. Both give items {bucket, group, opened, retracted}, where a
// violation falls in the bucket of its event's time, so that over all buckets
// opened minus retracted is what is open now.

import { ApiError, get, getAll } from "./api.js";

export const BUCKETS = ["hour", "day", "week"];

/** The start of the UTC hour, day or ISO week (from Monday) holding `time`. */
export function bucketStart(time, bucket) {
  const moment = new Date(time);
  if (Number.isNaN(moment.getTime())) return "unknown";
  moment.setUTCMinutes(0, 0, 0);
  if (bucket !== "hour") moment.setUTCHours(0);
  if (bucket === "week") moment.setUTCDate(moment.getUTCDate() - ((moment.getUTCDay() + 6) % 7));
  return moment.toISOString().replace(".000Z", "Z");
}

/** {bucket, group, opened, retracted} per (bucket, group) from violation items. */
export function bucketViolations(violations, bucket, groupBy) {
  const cells = new Map();
  for (const violation of violations) {
    const start = bucketStart(violation.occurred_at, bucket);
    const group = String(violation[groupBy] ?? "unknown");
    const key = `${start}\u0000${group}`;
    let cell = cells.get(key);
    if (!cell) {
      cell = { bucket: start, group, opened: 0, retracted: 0 };
      cells.set(key, cell);
    }
    // Every violation was opened once; a retracted one was also retracted.
    cell.opened += 1;
    if (violation.status === "retracted") cell.retracted += 1;
  }
  return [...cells.values()].sort(
    (a, b) => a.bucket.localeCompare(b.bucket) || a.group.localeCompare(b.group),
  );
}

/**
 * The report for each of `groupings`, from the endpoint when it answers, else
 * computed from every violation (read once for all groupings).
 * Returns {source: "report" | "violations", truncated, reports: {group_by: items}}.
 */
export async function violationReports(bucket, groupings, from = null) {
  const reports = {};
  try {
    for (const groupBy of groupings) {
      const query = { bucket, group_by: groupBy, from };
      reports[groupBy] = (await get("/v1/reports/violations", query)).items;
    }
    return { source: "report", truncated: false, reports };
  } catch (error) {
    if (!(error instanceof ApiError && error.missingEndpoint)) throw error;
  }
  const all = await getAll("/v1/violations");
  const since = from ? new Date(from).getTime() : Number.NEGATIVE_INFINITY;
  const inRange = all.items.filter((v) => new Date(v.occurred_at).getTime() >= since);
  for (const groupBy of groupings) reports[groupBy] = bucketViolations(inRange, bucket, groupBy);
  return { source: "violations", truncated: all.truncated, reports };
}

// How far back the overview looks, by the name it has in the address.
export const RANGES = { all: null, "24h": 86_400_000, "7d": 7 * 86_400_000, "30d": 30 * 86_400_000 };

/** The RFC 3339 start of a range ending now, or null for all time. */
export function rangeStart(range, now = Date.now()) {
  const span = RANGES[range];
  return span ? new Date(now - span).toISOString().replace(/\.\d+Z$/, "Z") : null;
}

/** Per group: opened, retracted and open now, most open first. */
export function totalsByGroup(items) {
  const totals = new Map();
  for (const item of items) {
    const total = totals.get(item.group) || { group: item.group, opened: 0, retracted: 0 };
    total.opened += item.opened;
    total.retracted += item.retracted;
    totals.set(item.group, total);
  }
  return [...totals.values()]
    .map((total) => ({ ...total, open: total.opened - total.retracted }))
    .sort((a, b) => b.open - a.open || b.opened - a.opened || a.group.localeCompare(b.group));
}
