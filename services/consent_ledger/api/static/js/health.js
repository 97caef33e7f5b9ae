// The ledger's health: record counts and lag (GET /v1/stats), each partition's
// Merkle log size in the latest signed checkpoint and its lag (/metrics), and
// the outbox, whatever of it the API reports.

import { describe, get, getText } from "./api.js";
import { count, h, instant, notice, table } from "./dom.js";

const KNOWN_STATS = ["accepted", "duplicates", "rejected", "violations_open", "violations_retracted", "lag"];

/** Prometheus text -> [{name, labels, value}] (enough of the format for the API's own metrics). */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match || line.startsWith("#")) continue;
    const labels = {};
    for (const pair of (match[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

function figures(pairs) {
  return h("dl", { class: "figures" },
    pairs.map(([term, value, id]) => h("div", { id }, h("dt", {}, term), h("dd", {}, value)))); // prettier-ignore
}

export async function render(root) {
  root.append(
    h("h1", {}, "Ledger health"),
    h("p", { class: "controls" },
      h("button", { type: "button", onclick: () => window.dispatchEvent(new HashChangeEvent("hashchange")) },
        "Refresh")),
  ); // prettier-ignore
  const settle = (promise) => promise.then((value) => ({ value }), (error) => ({ error }));
  const [stats, checkpoint, metrics] = await Promise.all([
    settle(get("/v1/stats")),
    settle(get("/v1/ledger/checkpoints/latest")),
    settle(getText("/metrics", {}, "text/plain")),
  ]);

  root.append(h("h2", {}, "Records"));
  if (stats.error) {
    root.append(notice("error", describe(stats.error, "Statistics")));
  } else {
    const st = stats.value;
    root.append(
      figures([
        ["accepted", count(st.accepted), "stat-accepted"],
        ["duplicates", count(st.duplicates), "stat-duplicates"],
        ["rejected", count(st.rejected), "stat-rejected"],
        ["violations open", count(st.violations_open), "stat-open"],
        ["violations retracted", count(st.violations_retracted), "stat-retracted"],
        ["lag (records not yet processed)", st.lag === null ? "broker unreachable" : count(st.lag), "stat-lag"],
      ]), // prettier-ignore
    );
  }

  const samples = metrics.error ? [] : parseMetrics(metrics.value);
  const lagByPartition = new Map(
    samples
      .filter((sample) => sample.name === "consent_ledger_consumer_lag")
      .map((sample) => [Number(sample.labels.partition), sample.value]),
  );
  root.append(h("h2", {}, "Partitions and the latest checkpoint"));
  if (checkpoint.error) {
    root.append(
      notice(checkpoint.error.status === 404 ? "empty" : "error", describe(checkpoint.error, "Latest checkpoint")),
    ); // prettier-ignore
  } else {
    const { id, checkpoint: signed } = checkpoint.value;
    root.append(
      figures([
        ["checkpoint", `#${id}`, "checkpoint-id"],
        ["signed at", instant(signed.issued_at), "checkpoint-issued"],
        ["key", signed.key_id, "checkpoint-key"],
        ["entries covered", count(signed.tree_heads.reduce((sum, head) => sum + head.size, 0)), "checkpoint-size"],
      ]), // prettier-ignore
    );
  }
  const heads = checkpoint.value?.checkpoint.tree_heads || [];
  const partitions = [...new Set([...heads.map((head) => head.partition), ...lagByPartition.keys()])].sort(
    (a, b) => a - b,
  );
  if (partitions.length) {
    root.append(
      table(
        ["partition", "entries signed", "tree root", "lag"],
        partitions.map((partition) => {
          const head = heads.find((x) => x.partition === partition);
          return h("tr", { dataset: { partition } },
            h("td", { class: "number" }, partition),
            h("td", { class: "number" }, head ? count(head.size) : "–"),
            h("td", { class: "id" }, head ? head.root : "–"),
            h("td", { class: "number" }, lagByPartition.has(partition) ? count(lagByPartition.get(partition)) : "–"));
        }), // prettier-ignore
        { class: "partitions", id: "partitions" },
      ),
    );
  }
  if (metrics.error) root.append(notice("error", describe(metrics.error, "Per-partition lag (/metrics)")));

  root.append(h("h2", {}, "Outbox"));
  const extra = Object.entries(stats.value || {}).filter(([name]) => !KNOWN_STATS.includes(name));
  const outboxSamples = samples.filter((sample) => /outbox|webhook/.test(sample.name));
  if (!extra.length && !outboxSamples.length) {
    root.append(
      notice("unavailable", "This API reports no outbox figures yet (neither /v1/stats nor /metrics)."),
    );
  }
  if (extra.length) {
    root.append(
      figures(extra.map(([name, value]) => [name.replaceAll("_", " "),
        typeof value === "object" && value !== null ? JSON.stringify(value) : count(value), `stat-${name}`])),
    ); // prettier-ignore
  }
  if (outboxSamples.length) {
    root.append(
      table(
        ["metric", "labels", "value"],
        outboxSamples.map((sample) =>
          h("tr", {},
            h("td", {}, sample.name),
            h("td", {}, Object.entries(sample.labels).map(([k, v]) => `${k}=${v}`).join(", ")),
            h("td", { class: "number" }, count(sample.value))),
        ), // prettier-ignore
        { class: "outbox" },
      ),
    );
  }
}
