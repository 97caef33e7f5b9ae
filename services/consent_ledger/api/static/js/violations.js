// Violations with filters (rule, subject, status) and cursor paging. The
// filters and the page's cursor live in the URL, so a view can be shared.

import { describe, get } from "./api.js";
import { h, instant, notice, table } from "./dom.js";
import { clauseTitles } from "./policy.js";

// CONTRACT §4: every rule a violation can name.
export const RULES = [
  "unknown-purpose",
  "purpose-not-permitted-for-role",
  "consent-missing",
  "consent-withdrawn",
  "consent-expired",
  "recipient-not-permitted",
  "recipient-purpose-mismatch",
  "partner-not-certified",
  "authority-without-court-order",
  "acquirer-without-nda",
  "forum-non-public-data",
  "visitor-not-informed",
  "shared-after-erasure",
];
const PAGE_SIZE = 50;
const MAX_PAGE_SIZE = 1000; // the API's own bound

// The cursors of the pages before this one, per filter, for "previous page".
const earlier = new Map();

function hashFor(filters, cursor) {
  // status is always written: "" (any) must not fall back to the default, open
  const query = new URLSearchParams({ status: filters.status });
  for (const name of ["rule", "subject", "limit"]) if (filters[name]) query.set(name, filters[name]);
  if (cursor) query.set("cursor", cursor);
  return `#/violations?${query}`;
}

export async function render(root, route) {
  const filters = {
    status: route.params.has("status") ? route.params.get("status") : "open",
    rule: route.params.get("rule") || "",
    subject: route.params.get("subject") || "",
  };
  const cursor = route.params.get("cursor") || "";
  const asked = Number.parseInt(route.params.get("limit"), 10);
  const limit = asked >= 1 ? Math.min(asked, MAX_PAGE_SIZE) : PAGE_SIZE;
  if (limit !== PAGE_SIZE) filters.limit = String(limit);
  const key = JSON.stringify(filters);

  const form = h(
    "form",
    { class: "filters", id: "violation-filters" },
    h("label", {}, "Status ",
      h("select", { name: "status" },
        [["open", "open"], ["retracted", "retracted"], ["", "any"]].map(([value, text]) =>
          h("option", { value, selected: value === filters.status }, text)))),
    h("label", {}, "Rule ",
      h("select", { name: "rule" },
        h("option", { value: "" }, "any"),
        RULES.map((rule) => h("option", { value: rule, selected: rule === filters.rule }, rule)))),
    h("label", {}, "Subject ",
      h("input", { name: "subject", value: filters.subject, placeholder: "any", spellcheck: "false" })),
    h("button", { type: "submit" }, "Filter"),
  ); // prettier-ignore
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const chosen = {
      status: data.get("status"),
      rule: data.get("rule"),
      subject: String(data.get("subject")).trim(),
      limit: filters.limit,
    };
    earlier.delete(JSON.stringify(chosen));
    window.location.hash = hashFor(chosen);
  });
  root.append(h("h1", {}, "Violations"), form);

  let page;
  let titles;
  try {
    [page, titles] = await Promise.all([
      get("/v1/violations", { ...filters, limit, cursor }),
      clauseTitles(),
    ]);
  } catch (error) {
    root.append(notice("error", describe(error, "Violations")));
    return;
  }
  if (!page.items.length) {
    root.append(notice("empty", "No violations match these filters."));
  } else {
    root.append(
      table(
        ["event time", "rule", "severity", "status", "clause", "subject", "explanation", "found"],
        page.items.map((item) =>
          h(
            "tr",
            { class: `violation ${item.status}`, dataset: { eventId: item.event_id, rule: item.rule } },
            h("td", { class: "time" }, instant(item.occurred_at)),
            h("td", {}, item.rule),
            h("td", {}, h("span", { class: `badge ${item.severity}` }, item.severity)),
            h("td", {}, item.status),
            h("td", { title: titles.get(item.clause) || "" }, item.clause),
            h("td", {},
              h("a", { href: `#/subject/${encodeURIComponent(item.subject)}`, class: "subject" },
                item.subject)),
            h("td", { class: "explanation" }, item.explanation),
            h("td", { class: "time" }, instant(item.detected_at)),
          ), // prettier-ignore
        ),
        { class: "violations", id: "violation-table" },
      ),
    );
  }
  const history = earlier.get(key) || [];
  const pager = h("p", { class: "pager" });
  if (cursor) {
    pager.append(
      h("a", { href: hashFor(filters, history.at(-1) || ""), id: "previous-page",
        onclick: () => earlier.set(key, history.slice(0, -1)) }, "← previous page"), " ",
    ); // prettier-ignore
  }
  if (page.next_cursor) {
    pager.append(
      h("a", { href: hashFor(filters, page.next_cursor), id: "next-page",
        onclick: () => earlier.set(key, [...history, cursor]) }, "next page →"),
    ); // prettier-ignore
  }
  root.append(pager);
}
