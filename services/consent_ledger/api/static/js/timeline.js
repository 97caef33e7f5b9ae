// A subject's timeline as SVG: one lane per consent purpose with the consent
// as spans (granted until withdrawn, expired or replaced), disclosures and
// visits as points coloured by their verdict, and the erasure as a line.

import { instant, s } from "./dom.js";

const WIDTH = 960;
const LEFT = 240; // room for lane names
const RIGHT = 20;
const LANE = 34;
const TOP = 10;
const AXIS = 30;

function ms(time) {
  return new Date(time).getTime();
}

/**
 * Lanes from ledger entries ({type, occurred_at, event}) and the subject's
 * violations: [{name, spans: [{from, to, state, title}], points: [{at, verdict, title, eventId}]}].
 */
export function lanesOf(entries, violations, now = Date.now()) {
  const verdicts = new Map();
  for (const violation of violations) {
    const list = verdicts.get(violation.event_id) || [];
    list.push(violation);
    verdicts.set(violation.event_id, list);
  }
  const verdictOf = (eventId) => {
    const list = verdicts.get(eventId) || [];
    if (list.some((v) => v.status === "open")) return "open";
    return list.length ? "retracted" : "clean";
  };
  const rulesOf = (eventId) =>
    (verdicts.get(eventId) || []).map((v) => `${v.rule} (${v.status})`).join(", ");

  const consents = new Map(); // purpose -> ordered consent changes
  const disclosures = { name: "disclosures", spans: [], points: [] };
  const visits = { name: "visits", spans: [], points: [] };
  const marks = [];
  const seen = new Set();
  for (const entry of entries) {
    seen.add(entry.event_id);
    const data = entry.event?.data || {};
    const at = ms(entry.occurred_at);
    if (entry.type === "ConsentGiven" || entry.type === "ConsentWithdrawn") {
      const purpose = data.purpose || "?";
      if (!consents.has(purpose)) consents.set(purpose, []);
      consents.get(purpose).push({ at, entry, data });
    } else if (entry.type === "DataShared") {
      const recipient = data.recipient || {};
      disclosures.points.push({
        at,
        eventId: entry.event_id,
        verdict: verdictOf(entry.event_id),
        title:
          `${instant(entry.occurred_at)} shared for ${data.purpose || "?"} with ` +
          `${recipient.kind || "?"} ${recipient.name || recipient.id || ""}` +
          (rulesOf(entry.event_id) ? ` — ${rulesOf(entry.event_id)}` : " — no violation"),
      });
    } else if (entry.type === "VisitorRegistered") {
      visits.points.push({
        at,
        eventId: entry.event_id,
        verdict: verdictOf(entry.event_id),
        title: `${instant(entry.occurred_at)} visited ${data.site || ""}` +
          (rulesOf(entry.event_id) ? ` — ${rulesOf(entry.event_id)}` : ""),
      }); // prettier-ignore
    } else if (entry.type === "ErasureRequested") {
      marks.push({ at, title: `${instant(entry.occurred_at)} erasure requested` });
    }
  }
  // Violations whose events the reader may not see (or that are not loaded) still show.
  for (const violation of violations) {
    if (seen.has(violation.event_id)) continue;
    seen.add(violation.event_id);
    disclosures.points.push({
      at: ms(violation.occurred_at),
      eventId: violation.event_id,
      verdict: verdictOf(violation.event_id),
      title: `${instant(violation.occurred_at)} ${rulesOf(violation.event_id)}`,
    });
  }

  const lanes = [];
  for (const [purpose, changes] of [...consents].sort(([a], [b]) => a.localeCompare(b))) {
    const lane = { name: `consent: ${purpose}`, spans: [], points: [] };
    changes.sort((a, b) => a.at - b.at);
    changes.forEach((change, n) => {
      if (change.entry.type !== "ConsentGiven") {
        lane.points.push({ at: change.at, verdict: "withdrawn", eventId: change.entry.event_id,
          title: `${instant(change.entry.occurred_at)} consent withdrawn` }); // prettier-ignore
        return;
      }
      const next = changes[n + 1]?.at ?? Number.POSITIVE_INFINITY;
      const expires = change.data.expires_at ? ms(change.data.expires_at) : Number.POSITIVE_INFINITY;
      const end = Math.min(next, expires);
      lane.spans.push({
        from: change.at,
        to: Number.isFinite(end) ? end : Math.max(now, change.at),
        open: !Number.isFinite(end),
        title:
          `${instant(change.entry.occurred_at)} consent given` +
          (change.data.channel ? ` via ${change.data.channel}` : "") +
          (change.data.expires_at ? `, expires ${instant(change.data.expires_at)}` : ""),
      });
      if (expires < next) {
        lane.points.push({ at: expires, verdict: "expired", title: `${instant(change.data.expires_at)} consent expired` });
      } // prettier-ignore
    });
    lanes.push(lane);
  }
  if (disclosures.points.length) lanes.push(disclosures);
  if (visits.points.length) lanes.push(visits);
  return { lanes, marks };
}

/** The timeline as an <svg>; `onPick(eventId)` is called when a point is clicked. */
export function timelineSvg({ lanes, marks }, onPick) {
  const times = [
    ...lanes.flatMap((lane) => [...lane.spans.flatMap((x) => [x.from, x.to]), ...lane.points.map((p) => p.at)]),
    ...marks.map((m) => m.at),
  ].filter(Number.isFinite); // prettier-ignore
  let start = Math.min(...times);
  let end = Math.max(...times);
  if (!times.length) start = end = Date.now();
  const pad = Math.max((end - start) * 0.04, 60_000);
  start -= pad;
  end += pad;
  const height = TOP + lanes.length * LANE + AXIS;
  const x = (t) => LEFT + ((t - start) / (end - start)) * (WIDTH - LEFT - RIGHT);
  const svg = s("svg", {
    viewBox: `0 0 ${WIDTH} ${height}`,
    class: "timeline",
    role: "img",
    "aria-label": "The subject's consents, disclosures and verdicts over time",
  });
  lanes.forEach((lane, n) => {
    const y = TOP + n * LANE + LANE / 2;
    svg.append(
      s("text", { x: LEFT - 8, y: y + 4, class: "lane-name", "text-anchor": "end" }, lane.name),
      s("line", { x1: LEFT, x2: WIDTH - RIGHT, y1: y, y2: y, class: "lane-line" }),
    );
    for (const span of lane.spans) {
      svg.append(
        s("rect", { x: x(span.from), y: y - 8, width: Math.max(x(span.to) - x(span.from), 2),
          height: 16, rx: 3, class: `span granted${span.open ? " open-ended" : ""}` },
          s("title", {}, span.title)),
      ); // prettier-ignore
    }
    for (const point of lane.points) {
      const mark = s(
        "circle",
        { cx: x(point.at), cy: y, r: 6, class: `point ${point.verdict}`,
          dataset: { eventId: point.eventId || "" }, tabindex: point.eventId ? 0 : null },
        s("title", {}, point.title),
      ); // prettier-ignore
      if (point.eventId && onPick) {
        mark.addEventListener("click", () => onPick(point.eventId));
        // Points close in time overlap: the keyboard reaches each one (Tab, then Enter).
        mark.addEventListener("keydown", (event) => {
          if (event.key === "Enter" || event.key === " ") onPick(point.eventId);
        });
      }
      svg.append(mark);
    }
  });
  for (const mark of marks) {
    svg.append(
      s("line", { x1: x(mark.at), x2: x(mark.at), y1: TOP, y2: height - AXIS, class: "erasure" },
        s("title", {}, mark.title)),
    ); // prettier-ignore
  }
  const axisY = height - AXIS + 6;
  svg.append(s("line", { x1: LEFT, x2: WIDTH - RIGHT, y1: axisY, y2: axisY, class: "axis" }));
  // Within one day the ticks give the time only, and the axis names the day once.
  const day = (t) => new Date(t).toISOString().slice(0, 10);
  const oneDay = day(start) === day(end);
  const tickLabel = (t) => {
    const text = new Date(t).toISOString();
    return oneDay ? text.slice(11, 19) : `${text.slice(0, 10)} ${text.slice(11, 16)}`;
  };
  for (let tick = 0; tick <= 4; tick += 1) {
    const t = start + ((end - start) * tick) / 4;
    svg.append(
      s("text", { x: x(t), y: axisY + 16, class: "tick",
        "text-anchor": tick === 0 ? "start" : tick === 4 ? "end" : "middle" }, tickLabel(t)),
    ); // prettier-ignore
  }
  svg.append(
    s("text", { x: LEFT - 8, y: axisY + 16, class: "tick", "text-anchor": "end" },
      oneDay ? `${day(start)} (UTC)` : "UTC"),
  ); // prettier-ignore
  return svg;
}
