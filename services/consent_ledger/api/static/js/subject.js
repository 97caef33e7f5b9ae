// One subject for a privacy officer: its consents now, its timeline (consents
// as spans, disclosures as points, verdicts as colours), every ledger entry,
// and the subject report (CONTRACT §8) to send or print.

import { describe, get, getAll, getText, session } from "./api.js";
import { h, instant, notice, table } from "./dom.js";
import { lanesOf, timelineSvg } from "./timeline.js";

function path(subject, leaf) {
  return `/v1/subjects/${encodeURIComponent(subject)}/${leaf}`;
}

function summary(entry) {
  const data = entry.event?.data;
  if (!data) return entry.event === null ? "(payload unreadable)" : "";
  switch (entry.type) {
    case "ConsentGiven":
      return `${data.purpose} by ${data.controller}` +
        (data.channel ? ` via ${data.channel}` : "") +
        (data.expires_at ? `, expires ${instant(data.expires_at)}` : ""); // prettier-ignore
    case "ConsentWithdrawn":
      return `${data.purpose} by ${data.controller}`;
    case "DataShared": {
      const r = data.recipient || {};
      const basis = data.legal_basis ? `, basis ${data.legal_basis.kind}` : "";
      return `${data.purpose}: ${(data.data_categories || []).join(", ")} to ${r.kind} ` +
        `${r.name ? `${r.name} (${r.id})` : r.id}${basis}`; // prettier-ignore
    }
    case "VisitorRegistered":
      return `${data.site}, rights notice ${data.rights_notice ?? "none"}`;
    default:
      return data.reason || "";
  }
}

async function openReport(subject, status) {
  status.replaceChildren("Fetching the report…");
  let html;
  try {
    html = await getText(path(subject, "report"), { format: "html" });
  } catch (error) {
    status.replaceChildren(describe(error, "The subject report"));
    return;
  }
  // The report needs the bearer token, which a plain link would not send: the
  // page fetches it and shows it as a document of its own, to read, print or save.
  const url = URL.createObjectURL(new Blob([html], { type: "text/html" }));
  const name = `report-${subject.replace(/[^\w.-]+/g, "_")}.html`;
  const opened = window.open(url, "_blank");
  status.replaceChildren(
    opened ? "The report opened in a new tab; print it to PDF from there. " : "",
    h("a", { href: url, target: "_blank", id: "report-link" }, "Open the report"),
    " · ",
    h("a", { href: url, download: name }, "Save it"),
  );
}

function searchForm(subject) {
  const form = h(
    "form",
    { class: "filters", id: "subject-form" },
    h("label", {}, "Subject ",
      h("input", { name: "subject", value: subject, required: true, spellcheck: "false", size: 32 })),
    h("label", {}, "Purpose ",
      h("input", { name: "purpose", value: session.purpose, size: 28, spellcheck: "false",
        placeholder: "e.g. access request 2026-17", title: "Sent as X-Purpose; the access log keeps it" })),
    h("button", { type: "submit" }, "Show"),
  ); // prettier-ignore
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    session.purpose = String(new FormData(form).get("purpose"));
    const chosen = String(new FormData(form).get("subject")).trim();
    const target = `#/subject/${encodeURIComponent(chosen)}`;
    if (!chosen) return;
    if (window.location.hash === target) window.dispatchEvent(new HashChangeEvent("hashchange"));
    else window.location.hash = target;
  });
  return form;
}

export async function render(root, route) {
  const subject = route.rest.join("/");
  root.append(h("h1", {}, "Subject"), searchForm(subject));
  if (!subject) {
    root.append(h("p", { class: "hint" }, "A subject id, or pick one from the violations."));
    return;
  }
  const reportStatus = h("span", { id: "report-status" });
  root.append(
    h("h2", { id: "subject-id" }, subject),
    h("p", { class: "controls" },
      h("button", { type: "button", id: "open-report", onclick: () => openReport(subject, reportStatus) },
        "Subject report (access request)"), " ", reportStatus),
  ); // prettier-ignore

  const settle = (promise) => promise.then((value) => ({ value }), (error) => ({ error }));
  const [events, consents, violations] = await Promise.all([
    settle(getAll(path(subject, "events"), {}, 5000)),
    settle(get(path(subject, "consents"))),
    settle(getAll("/v1/violations", { subject })),
  ]);
  const erased = [events, consents].find((r) => r.error?.status === 410)?.error.body;
  if (erased) {
    root.append(
      notice("erased", `Erased: the subject asked to be forgotten at ${instant(erased.erased_at)}. `,
        "Its personal data in the ledger is unreadable; the verdicts reached before stay."),
    ); // prettier-ignore
  }

  root.append(h("h3", {}, "Consents now"));
  if (consents.error) {
    if (!erased) root.append(notice("error", describe(consents.error, "Consents")));
  } else if (!consents.value.consents.length) {
    root.append(notice("empty", "No consent events for this subject."));
  } else {
    root.append(
      table(
        ["purpose", "status", "since", "expires", "decided by"],
        consents.value.consents.map((c) =>
          h("tr", { class: `consent ${c.status}` },
            h("td", {}, c.purpose), h("td", {}, c.status), h("td", { class: "time" }, instant(c.since)),
            h("td", { class: "time" }, instant(c.expires_at)), h("td", { class: "id" }, c.event_id)),
        ), // prettier-ignore
        { class: "consents" },
      ),
    );
  }

  const entries = events.value?.items || [];
  const verdicts = violations.value?.items || [];
  root.append(h("h3", {}, "Timeline"));
  if (events.error && !erased) root.append(notice("error", describe(events.error, "Ledger entries")));
  if (violations.error) root.append(notice("error", describe(violations.error, "Violations")));
  const entryTable = h("div");
  if (entries.length || verdicts.length) {
    const pick = (eventId) => {
      const row = document.getElementById(`entry-${eventId}`);
      if (!row) return;
      for (const old of document.querySelectorAll("tr.picked")) old.classList.remove("picked");
      row.classList.add("picked");
      row.scrollIntoView({ block: "center" });
    };
    root.append(
      h("div", { class: "timeline-box", id: "timeline" }, timelineSvg(lanesOf(entries, verdicts), pick)),
      h("p", { class: "legend" },
        h("span", { class: "key granted" }, "consent granted"),
        h("span", { class: "key clean" }, "no violation"),
        h("span", { class: "key open" }, "violation open"),
        h("span", { class: "key retracted" }, "violation retracted"),
        h("span", { class: "key withdrawn" }, "withdrawn / expired")),
    ); // prettier-ignore
  } else if (!events.error) {
    root.append(notice("empty", "The ledger holds nothing about this subject."));
  }
  root.append(entryTable);
  if (entries.length) {
    const byEvent = new Map();
    for (const v of verdicts) byEvent.set(v.event_id, [...(byEvent.get(v.event_id) || []), v]);
    entryTable.append(
      h("h3", {}, "Ledger entries"),
      events.value.truncated ? notice("empty", "Only the first 5,000 entries are shown.") : "",
      table(
        ["event time", "type", "what", "verdict", "event id"],
        entries.map((entry) =>
          h("tr", { id: `entry-${entry.event_id}`, class: "entry" },
            h("td", { class: "time" }, instant(entry.occurred_at)),
            h("td", {}, entry.type),
            h("td", {}, summary(entry)),
            h("td", {}, (byEvent.get(entry.event_id) || []).map((v) =>
              h("span", { class: `verdict ${v.status}`, title: v.explanation }, `${v.rule} (${v.status})`))),
            h("td", { class: "id" }, entry.event_id)),
        ), // prettier-ignore
        { class: "entries" },
      ),
    );
  }
}
