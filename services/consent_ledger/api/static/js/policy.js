// The policy in force with its clauses and their coverage (GET /v1/policy,
// CONTRACT §8). The page reads the fields it knows and shows the rest as it
// came, so that a richer answer is never hidden; when the API has no such
// endpoint it says so.

import { ApiError, describe, get } from "./api.js";
import { count, h, notice, table } from "./dom.js";

let loaded = null;

/** The policy document, or null when the API does not offer it; fetched once per page. */
export function loadPolicy() {
  if (!loaded) {
    loaded = get("/v1/policy").catch((error) => {
      loaded = null; // ask again next time: the token or the API may change
      if (error instanceof ApiError && error.missingEndpoint) return null;
      throw error;
    });
  }
  return loaded;
}

function words(value) {
  if (value === undefined || value === null) return "";
  if (typeof value === "string") return value;
  if (typeof value === "object") {
    return Object.entries(value)
      .map(([language, text]) => `${language}: ${words(text)}`)
      .join("\n");
  }
  return String(value);
}

/** Clauses as a list of {id, title, text, rules, open, enforced}, whatever form the document used. */
export function clausesOf(policy) {
  if (!policy) return [];
  let list = policy.clauses || [];
  if (!Array.isArray(list)) list = Object.entries(list).map(([id, clause]) => ({ id, ...clause }));
  return list.map((clause) => {
    const rules = clause.rules ?? clause.enforced_by ?? clause.purposes ?? [];
    return {
      id: String(clause.id ?? clause.clause ?? clause.key ?? ""),
      title: words(clause.title ?? clause.name),
      text: words(clause.text ?? clause.words ?? clause.statement ?? clause.quote),
      rules: Array.isArray(rules) ? rules : Object.keys(rules),
      open: clause.violations_open ?? clause.open_violations ?? clause.open ?? null,
      enforced: clause.enforced ?? (Array.isArray(rules) ? rules.length > 0 : true),
    };
  });
}

/** clause id -> title, for labels elsewhere; empty when the policy is not available. */
export async function clauseTitles() {
  const titles = new Map();
  try {
    for (const clause of clausesOf(await loadPolicy())) {
      if (clause.title) titles.set(clause.id, clause.title.split("\n")[0].replace(/^\w\w: /, ""));
    }
  } catch {
    // Labels fall back to the clause ids; the policy view says why.
  }
  return titles;
}

function ruleName(rule) {
  if (typeof rule === "string") return rule;
  return rule.rule ?? rule.id ?? rule.name ?? JSON.stringify(rule);
}

export async function render(root) {
  root.append(h("h1", {}, "Policy"));
  let policy;
  try {
    policy = await loadPolicy();
  } catch (error) {
    root.append(notice("error", describe(error, "The policy")));
    return;
  }
  if (policy === null) {
    root.append(
      notice(
        "unavailable",
        "The policy is unavailable: this API does not offer GET /v1/policy yet.",
      ),
    );
    return;
  }
  const version = policy.version ?? policy.policy_version;
  root.append(
    h(
      "p",
      { class: "lead" },
      policy.policy ? `${policy.policy}, ` : "",
      version !== undefined ? `version ${version}` : "",
      policy.effective_from ? `, in force from ${policy.effective_from}` : "",
    ),
  );
  const clauses = clausesOf(policy);
  if (clauses.length) {
    const unenforced = clauses.filter((clause) => !clause.enforced);
    root.append(
      h("h2", {}, "Clauses and coverage"),
      h(
        "p",
        {},
        `${clauses.length} clauses; `,
        unenforced.length
          ? `${unenforced.length} enforced by no rule: ${unenforced.map((c) => c.id).join(", ")}.`
          : "every clause is enforced by at least one rule.",
      ),
      table(
        ["clause", "title", "the statement's words", "enforced by", "open violations"],
        clauses.map((clause) =>
          h(
            "tr",
            { class: clause.enforced ? "" : "unenforced", dataset: { clause: clause.id } },
            h("td", {}, clause.id),
            h("td", {}, clause.title),
            h("td", { class: "words" }, clause.text),
            h(
              "td",
              {},
              clause.enforced ? clause.rules.map(ruleName).join(", ") : h("em", {}, "no rule"),
            ),
            h("td", { class: "number" }, count(clause.open)),
          ),
        ),
        { class: "clauses" },
      ),
    );
  }
  const rules = Array.isArray(policy.rules) ? policy.rules : [];
  if (rules.length) {
    const clauseOf = (rule) => {
      const clause = rule.clause ?? "";
      if (typeof clause !== "object") return String(clause);
      return [clause.id, words(clause.title).split("\n")[0]].filter(Boolean).join(": ");
    };
    root.append(
      h("h2", {}, "Rules"),
      table(
        ["rule", "clause it enforces", "severity"],
        rules.map((rule) =>
          h("tr", {}, h("td", {}, ruleName(rule)), h("td", {}, clauseOf(rule)), h("td", {}, rule.severity ?? "")),
        ), // prettier-ignore
        { class: "rules" },
      ),
    );
  }
  root.append(
    h(
      "details",
      {},
      h("summary", {}, "The policy document as the API sent it"),
      h("pre", {}, JSON.stringify(policy, null, 2)),
    ),
  );
}
