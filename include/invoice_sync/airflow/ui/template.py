"""The page's HTML (Jinja2, autoescaped). Kept in a module, not a file, so installing ``include/`` as a
package (the Docker image does) cannot leave the template behind.

Accessibility: one ``h1``, a heading per integration, tables with captions and header scopes, labelled
form controls, states written out in words (never colour alone), and buttons that name their integration.
Each pager is a ``nav`` named after its list and integration, its links marked ``rel="prev"`` and
``rel="next"``. The page runs inside the Airflow UI's iframe, so links into Airflow open in the top window;
its own links (the pagers) stay in the frame.
"""

from __future__ import annotations

from jinja2 import Environment, select_autoescape

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Invoice sync</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1a1a1a; line-height: 1.45; }
  h1 { font-size: 1.6rem; margin-top: 0; }
  h2 { font-size: 1.25rem; margin-bottom: .3rem; }
  section.integration { border-top: 1px solid #bbb; padding-top: .8rem; margin-top: 1.4rem; }
  table { border-collapse: collapse; margin: .5rem 0 1rem; width: 100%; }
  caption { text-align: left; font-weight: 600; padding: .3rem 0; }
  th, td { border: 1px solid #ccc; padding: .3rem .5rem; text-align: left; vertical-align: top; }
  th { background: #f2f2f2; }
  .counts { display: flex; flex-wrap: wrap; gap: .5rem; padding: 0; list-style: none; }
  .counts li { border: 1px solid #ccc; border-radius: 4px; padding: .2rem .6rem; }
  .counts strong { font-size: 1.1rem; }
  .flash { padding: .6rem .8rem; border-radius: 4px; border: 1px solid; margin-bottom: 1rem; }
  .flash.ok { background: #eef8ee; border-color: #2e7d32; }
  .flash.error { background: #fdecea; border-color: #c62828; }
  .bell { background: #fffbe6; border: 1px solid #d4a017; border-radius: 4px; padding: .6rem .9rem; }
  .actions form { display: inline; }
  button { padding: .35rem .8rem; cursor: pointer; }
  form.filters label { margin-right: .4rem; }
  form.filters select, form.filters input { margin-right: 1rem; }
  form.filters input[type=number] { width: 7rem; }
  nav.pager { margin: -.6rem 0 1rem; }
  nav.pager a { margin-right: .8rem; }
</style>
</head>
<body>
<h1>Invoice sync</h1>
<p>Signed in as <strong>{{ user }}</strong>. Invoices without a registration number are not synced yet.</p>

{% if flash_ok %}<div class="flash ok" role="status">{{ flash_ok }}
  {% if flash_run_link %} <a href="{{ flash_run_link }}" target="_top">Open the run in Airflow</a>{% endif %}
</div>{% endif %}
{% if flash_error %}<div class="flash error" role="alert">{{ flash_error }}</div>{% endif %}

<form class="filters" method="get" action="">
  <label for="f-integration">Integration</label>
  {% if page.integration_choices is not none %}
  <select id="f-integration" name="integration">
    <option value="">All</option>
    {% for i in page.integration_choices %}
    <option value="{{ i.id }}" {% if page.filters.integration == i.id %}selected{% endif %}>
      {{ i.name }} ({{ i.tool }})</option>
    {% endfor %}
  </select>
  {% else %}
  <input id="f-integration" name="integration" type="number" min="0" inputmode="numeric"
    placeholder="id (all: empty)"
    value="{{ page.filters.integration if page.filters.integration is not none }}">
  {% endif %}
  <label for="f-tool">Tool</label>
  <select id="f-tool" name="tool">
    <option value="">All</option>
    {% for name, label in page.tools %}
    <option value="{{ name }}" {% if page.filters.tool == name %}selected{% endif %}>{{ label }}</option>
    {% endfor %}
  </select>
  <label for="f-state">State</label>
  <select id="f-state" name="state">
    <option value="">All</option>
    {% for key, label in states.items() %}
    <option value="{{ key }}" {% if page.filters.state == key %}selected{% endif %}>{{ label }}</option>
    {% endfor %}
  </select>
  {% for key in ("per_page", "rows") if page.filters[key] != default_filters[key] %}
  <input type="hidden" name="{{ key }}" value="{{ page.filters[key] }}">
  {% endfor %}
  <button type="submit">Apply</button>
</form>

<section class="bell" aria-labelledby="bell-title">
  <h2 id="bell-title">&#128276; Latest notification</h2>
  {% set n = page.notification %}
  {% if n %}
  <p><strong>{{ n.title }}</strong><br>
    <small>{{ n.created_at.strftime("%Y-%m-%d %H:%M UTC") }}
    {% if n.recipient %} &middot; for {{ n.recipient }}{% endif %}
    {% if n.body.run_id %} &middot; run {{ n.body.run_id }}{% endif %}</small></p>
  {% if n.body.errors %}
  <ul>
    {% for e in n.body.errors %}
    <li>{{ e.text }}{% if e.hint %} &mdash; <em>{{ e.hint }}</em>{% endif %}</li>
    {% endfor %}
  </ul>
  {% endif %}
  {% else %}
  <p>No notification yet. A manual sync ("Sync now") writes one when it finishes.</p>
  {% endif %}
</section>

{% macro showing(pager) -%}
  {%- if pager.total %} &mdash; showing {{ pager.first|thousands }}&ndash;{{ pager.last|thousands }}
  of {{ pager.total|thousands }}{% endif -%}
{%- endmacro %}

{% macro list_pager(listing, name, key, label, i) -%}
{%- set p = listing.pager -%}
{%- if p.has_previous or p.has_next %}
  <nav class="pager" data-list="{{ name }}" aria-label="Pages of {{ label }}: {{ i.name }}">
    {% if p.has_previous -%}
    <a rel="prev" href="{{ page.filters.link(integration=i.id, page=1, **{key: p.page - 1}) }}">Previous</a>
    {%- endif %}
    page {{ p.page|thousands }} of {{ p.pages|thousands }}
    {% if p.has_next -%}
    <a rel="next" href="{{ page.filters.link(integration=i.id, page=1, **{key: p.page + 1}) }}">Next</a>
    {%- endif %}
  </nav>
{%- endif %}
{%- endmacro %}

{% set ip = page.integrations.pager %}
{% if ip.total %}
<nav class="pager" data-list="integrations" aria-label="Pages of integrations">
  <p>Integrations {{ ip.first|thousands }}&ndash;{{ ip.last|thousands }} of {{ ip.total|thousands }}
  {% if ip.has_previous -%}
  <a rel="prev" href="{{ page.filters.link(page=ip.page - 1) }}">Previous</a>
  {%- endif %}
  {% if ip.has_next %}<a rel="next" href="{{ page.filters.link(page=ip.page + 1) }}">Next</a>{% endif %}</p>
</nav>
{% endif %}

{% for v in page.integrations.rows %}
{% set i = v.integration %}
<section class="integration" aria-labelledby="int-{{ i.id }}">
  <h2 id="int-{{ i.id }}">{{ i.name }}
    <small>({{ i.tool }}, integration {{ i.id }}
    {%- if not i.auto_sync %}, manual only{% endif %})</small></h2>
  {% if i.unreadable -%}
  <div class="flash error" role="alert">Cannot be synced: {{ i.unreadable }}</div>
  {%- endif %}
  <ul class="counts" aria-label="Counts for {{ i.name }}">
    <li><strong>{{ v.counts.synced|thousands }}</strong> synced</li>
    <li><strong>{{ v.counts.unsynced|thousands }}</strong> not synced</li>
    <li><strong>{{ v.counts.failed|thousands }}</strong> failed</li>
    <li><strong>{{ v.counts.deferred|thousands }}</strong> deferred</li>
    <li><strong>{{ v.counts.unknown|thousands }}</strong> awaiting lookup</li>
    <li><strong>{{ v.counts.changed_after_sync|thousands }}</strong> changed after sync</li>
    <li><strong>{{ v.counts.drafts|thousands }}</strong> drafts (never synced)</li>
  </ul>
  <div class="actions">
    <form method="post" action="integrations/{{ i.id }}/sync">
      <input type="hidden" name="back" value="{{ page.filters.query() }}">
      <input type="hidden" name="form_token" value="{{ form_token }}">
      <button type="submit" aria-label="Sync now: {{ i.name }}">Sync now</button>
    </form>
    <form method="post" action="integrations/{{ i.id }}/retry-failed">
      <input type="hidden" name="back" value="{{ page.filters.query() }}">
      <input type="hidden" name="form_token" value="{{ form_token }}">
      <button type="submit" aria-label="Retry failed: {{ i.name }}"
        {% if not v.counts.failed and not v.counts.deferred %}disabled{% endif %}>Retry failed</button>
    </form>
  </div>

  {% if v.not_synced %}
  <table data-list="not_synced">
    <caption>Not synced{{ showing(v.not_synced.pager) }}</caption>
    {% if v.not_synced.rows %}
    <thead><tr>
      <th scope="col">Invoice</th><th scope="col">Date</th><th scope="col">Total</th>
      <th scope="col">State</th>
      <th scope="col">Attempts</th><th scope="col">Error class</th>
      <th scope="col">Message</th><th scope="col">How to fix</th>
    </tr></thead>
    <tbody>
    {% for r in v.not_synced.rows %}
    <tr>
      <th scope="row">{{ r.invoice.number or "(no number)" }}
        {%- if r.invoice.kind == "credit_note" %} <small>credit note</small>{% endif %}</th>
      <td>{{ r.invoice.invoice_date }}</td>
      <td>{{ r.invoice.currency }} {{ r.invoice.total_incl_vat }}</td>
      <td>{{ r.state_label }}</td>
      <td>{{ r.invoice.attempts }}</td>
      <td>{{ r.invoice.error_class or "" }}</td>
      <td>{{ r.invoice.error_message or "" }}</td>
      <td>{{ r.hint or "" }}</td>
    </tr>
    {% endfor %}
    </tbody>
    {% else %}<tbody><tr><td>None.</td></tr></tbody>{% endif %}
  </table>
  {{ list_pager(v.not_synced, "not_synced", "not_synced_page", "not synced", i) }}
  {% endif %}

  {% if v.deferred %}
  <table data-list="deferred">
    <caption>Deferred to the next run{{ showing(v.deferred.pager) }}
      (the tool's daily limit was reached)</caption>
    {% if v.deferred.rows %}
    <thead><tr><th scope="col">Invoice</th><th scope="col">Date</th>
      <th scope="col">Total</th><th scope="col">Deferred at</th></tr></thead>
    <tbody>
    {% for r in v.deferred.rows %}
    <tr><th scope="row">{{ r.invoice.number or "(no number)" }}</th><td>{{ r.invoice.invoice_date }}</td>
      <td>{{ r.invoice.currency }} {{ r.invoice.total_incl_vat }}</td>
      <td>{{ r.invoice.last_attempt_at.strftime("%Y-%m-%d %H:%M UTC")
        if r.invoice.last_attempt_at else "" }}</td></tr>
    {% endfor %}
    </tbody>
    {% else %}<tbody><tr><td>None.</td></tr></tbody>{% endif %}
  </table>
  {{ list_pager(v.deferred, "deferred", "deferred_page", "deferred", i) }}
  {% endif %}

  {% if v.changed_after_sync %}
  <table data-list="changed">
    <caption>Changed after sync{{ showing(v.changed_after_sync.pager) }}
      (the change was not sent: correct it in the tool or issue a credit note)</caption>
    {% if v.changed_after_sync.rows %}
    <thead><tr><th scope="col">Invoice</th><th scope="col">Registration number</th></tr></thead>
    <tbody>
    {% for c in v.changed_after_sync.rows %}
    <tr><th scope="row">{{ c.number }}</th><td>{{ c.registration_number }}</td></tr>
    {% endfor %}
    </tbody>
    {% else %}<tbody><tr><td>None.</td></tr></tbody>{% endif %}
  </table>
  {{ list_pager(v.changed_after_sync, "changed", "changed_page", "changed after sync", i) }}
  {% endif %}
</section>
{% else %}
<p>No integration matches these filters.</p>
{% endfor %}
</body>
</html>
"""


def _thousands(number: int) -> str:
    """1234 as "1,234": totals of thousands are read at a glance."""
    return f"{number:,}"


_environment = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
_environment.filters["thousands"] = _thousands
page_template = _environment.from_string(PAGE)
