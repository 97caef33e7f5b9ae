// Violations over time by rule and by clause: a stacked bar per bucket of the
// violations opened, a line of those retracted, and a table of what is open
// now per group, so that the clause broken most stands first.

import { describe } from "./api.js";
import { count, h, notice, table } from "./dom.js";
import { clauseTitles } from "./policy.js";
import { BUCKETS, RANGES, rangeStart, totalsByGroup, violationReports } from "./reports.js";

const GROUPINGS = [
  { by: "rule", title: "by rule" },
  { by: "clause", title: "by clause" },
];
const MAX_SERIES = 10; // more groups than this are summed as "other" in the chart
const PALETTE = [
  "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
  "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#393b79",
];

function label(bucket, size) {
  const start = new Date(bucket);
  if (Number.isNaN(start.getTime())) return bucket;
  const text = start.toISOString();
  if (size === "hour") return `${text.slice(0, 10)} ${text.slice(11, 13)}:00 UTC`;
  return size === "week" ? `week of ${text.slice(0, 10)}` : text.slice(0, 10);
}

function chart(canvas, items, bucket, nameOf) {
  const buckets = [...new Set(items.map((item) => item.bucket))].sort();
  const groups = totalsByGroup(items).map((total) => total.group);
  const shown = groups.slice(0, MAX_SERIES);
  const series = new Map(shown.map((group) => [group, buckets.map(() => 0)]));
  const other = buckets.map(() => 0);
  const retracted = buckets.map(() => 0);
  for (const item of items) {
    const at = buckets.indexOf(item.bucket);
    (series.get(item.group) || other)[at] += item.opened;
    retracted[at] += item.retracted;
  }
  const datasets = shown.map((group, n) => ({
    label: nameOf(group),
    data: series.get(group),
    backgroundColor: PALETTE[n % PALETTE.length],
    stack: "opened",
  }));
  if (groups.length > MAX_SERIES) {
    datasets.push({ label: "other", data: other, backgroundColor: "#c7c7c7", stack: "opened" });
  }
  datasets.push({
    type: "line",
    label: "retracted (all groups)",
    data: retracted,
    borderColor: "#555",
    backgroundColor: "#555",
    borderDash: [4, 3],
  });
  // eslint-disable-next-line no-undef -- Chart is the vendored UMD build's global
  return new Chart(canvas, {
    type: "bar",
    data: { labels: buckets.map((b) => label(b, bucket)), datasets },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: {
        x: { stacked: true },
        y: { stacked: true, beginAtZero: true, title: { display: true, text: "violations" } },
      },
      plugins: { legend: { position: "right" } },
    },
  });
}

export async function render(root, route) {
  const bucket = BUCKETS.includes(route.params.get("bucket")) ? route.params.get("bucket") : "day";
  const range = route.params.get("range") in RANGES ? route.params.get("range") : "all";
  const choose = (name) => (event) => {
    const query = new URLSearchParams({ bucket, range, [name]: event.target.value });
    window.location.hash = `#/overview?${query}`;
  };
  root.append(
    h("h1", {}, "Violations over time"),
    h("p", { class: "controls" },
      h("label", { for: "bucket" }, "Buckets "),
      h("select", { id: "bucket", onchange: choose("bucket") },
        BUCKETS.map((size) => h("option", { value: size, selected: size === bucket }, `per ${size}`))),
      h("label", { for: "range" }, "Events of "),
      h("select", { id: "range", onchange: choose("range") },
        Object.keys(RANGES).map((name) =>
          h("option", { value: name, selected: name === range }, name === "all" ? "all time" : `the last ${name}`)))),
  ); // prettier-ignore
  const from = rangeStart(range);
  const [titles, result] = await Promise.all([
    clauseTitles(),
    violationReports(bucket, GROUPINGS.map((g) => g.by), from).catch((error) => ({ error })),
  ]);
  if (result.error) {
    root.append(notice("error", describe(result.error, "Violations over time")));
    return;
  }
  root.append(
    h(
      "p",
      { class: "source" },
      result.source === "report"
        ? "From GET /v1/reports/violations; each violation counts in the bucket of its event's time."
        : "Computed here from GET /v1/violations (this API has no /v1/reports/violations yet); " +
            "each violation counts in the bucket of its event's time.",
      result.truncated ? " Only the first 20,000 violations are counted." : "",
    ),
  );
  for (const { by, title } of GROUPINGS) {
    const items = result.reports[by];
    const nameOf = (group) =>
      by === "clause" && titles.has(group) ? `${group}: ${titles.get(group)}` : group;
    const section = h("section", { class: "report", id: `by-${by}` }, h("h2", {}, `Opened ${title}`));
    root.append(section);
    if (!items.length) {
      section.append(notice("empty", "No violations yet."));
      continue;
    }
    const canvas = h("canvas", { "aria-label": `Violations opened per ${bucket}, ${title}` });
    section.append(h("div", { class: "chart" }, canvas));
    chart(canvas, items, bucket, nameOf);
    const totals = totalsByGroup(items);
    section.append(
      h(
        "p",
        { class: "most" },
        `Most open now, ${title}: `,
        h("strong", {}, nameOf(totals[0].group)),
        ` (${count(totals[0].open)} open).`,
      ),
      table(
        [by, "opened", "retracted", "open now"],
        totals.map((total) =>
          h(
            "tr",
            {},
            h(
              "td",
              {},
              by === "rule"
                ? h("a", { href: `#/violations?rule=${encodeURIComponent(total.group)}` }, total.group)
                : nameOf(total.group),
            ),
            h("td", { class: "number" }, count(total.opened)),
            h("td", { class: "number" }, count(total.retracted)),
            h("td", { class: "number" }, count(total.open)),
          ),
        ),
        { class: "totals" },
      ),
    );
  }
}
