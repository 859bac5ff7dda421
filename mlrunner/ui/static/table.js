/* A virtual table: only the rows in view are in the DOM (10,000 rows scroll as fast as 10).
   Columns: {key, label, render(row) -> Node | text, sort(row) -> value, width}. Click a
   header to sort (again: descending). */
(function () {
  "use strict";
  const MLR = window.MLR;
  const ROW = 26;

  function cmp(a, b) {
    const na = a === null || a === undefined || a === "" || (typeof a === "number" && isNaN(a));
    const nb = b === null || b === undefined || b === "" || (typeof b === "number" && isNaN(b));
    if (na || nb) return na && nb ? 0 : na ? 1 : -1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    if (typeof a === "boolean" && typeof b === "boolean") return a === b ? 0 : a ? 1 : -1;
    return String(a).localeCompare(String(b), undefined, { numeric: true });
  }
  MLR.compare = cmp;

  function VTable(host, columns, opts) {
    this.opts = opts || {};
    this.columns = columns;
    this.rows = [];
    this.view = [];
    this.sortKey = this.opts.sortKey || null;
    this.desc = false;
    this.root = MLR.el("div", { class: "vt", role: "table" });
    this.scroll = MLR.el("div", { class: "vt-scroll" });
    this.head = MLR.el("div", { class: "vt-head vt-row", role: "row" });
    this.spacer = MLR.el("div", { class: "vt-spacer" });
    this.body = MLR.el("div", { class: "vt-body", role: "rowgroup" });
    this.spacer.append(this.body);
    this.scroll.append(this.head, this.spacer);
    this.root.append(this.scroll);
    if (this.opts.height) this.scroll.style.maxHeight = this.opts.height;
    host.append(this.root);
    this.pool = [];
    this.scroll.addEventListener("scroll", () => this.draw());
    window.addEventListener("resize", () => this.draw());
    this.setColumns(columns);
  }
  VTable.prototype.setColumns = function (columns) {
    this.columns = columns;
    this.widths = columns.map((c) => c.width || 120);
    this.template = this.widths.map((w) => w + "px").join(" ");
    MLR.clear(this.head);
    this.head.style.gridTemplateColumns = this.template;
    columns.forEach((c) => {
      const cell = MLR.el("div", {
        class: "vt-cell vt-th",
        role: "columnheader",
        title: c.title || c.label,
        dataset: { key: c.key },
        onclick: c.nosort ? null : () => this.sortBy(c.key),
      });
      cell.append(MLR.el("span", { text: c.label }));
      if (this.sortKey === c.key) cell.append(MLR.el("span", { class: "arrow", text: this.desc ? " \u25bc" : " \u25b2" }));
      this.head.append(cell);
    });
    const total = this.widths.reduce((a, b) => a + b, 0);
    this.head.style.width = this.spacer.style.width = total + "px";
    this.pool.forEach((r) => r.remove());
    this.pool = [];
    this.resort();
  };
  VTable.prototype.sortBy = function (key) {
    if (this.sortKey === key) this.desc = !this.desc;
    else {
      this.sortKey = key;
      this.desc = false;
    }
    this.setColumns(this.columns);
  };
  VTable.prototype.setRows = function (rows) {
    this.rows = rows;
    this.resort();
  };
  VTable.prototype.resort = function () {
    const col = this.columns.find((c) => c.key === this.sortKey);
    this.view = this.rows.slice();
    if (col) {
      const get = col.sort || ((r) => r[col.key]);
      const keyed = this.view.map((r, i) => [get(r), i, r]);
      const sign = this.desc ? -1 : 1;
      keyed.sort((x, y) => {
        const nx = x[0] === null || x[0] === undefined, ny = y[0] === null || y[0] === undefined;
        if (nx || ny) return nx && ny ? x[1] - y[1] : nx ? 1 : -1; /* missing last, both ways */
        return sign * cmp(x[0], y[0]) || x[1] - y[1];
      });
      this.view = keyed.map((k) => k[2]);
    }
    this.spacer.style.height = this.view.length * ROW + ROW + "px";
    this.root.dataset.rows = String(this.view.length);
    this.draw(true);
  };
  VTable.prototype.draw = function (force) {
    const top = Math.max(0, this.scroll.scrollTop - ROW);
    const height = this.scroll.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW) - 5);
    const last = Math.min(this.view.length, Math.ceil((top + height) / ROW) + 5);
    if (!force && first === this.first && last === this.last) return;
    this.first = first;
    this.last = last;
    this.body.style.transform = "translateY(" + first * ROW + "px)";
    const n = last - first;
    while (this.pool.length < n) {
      const r = MLR.el("div", { class: "vt-row", role: "row" });
      r.style.gridTemplateColumns = this.template;
      this.pool.push(r);
      this.body.append(r);
    }
    for (let i = 0; i < this.pool.length; i++) {
      const r = this.pool[i];
      if (i >= n) {
        r.hidden = true;
        continue;
      }
      r.hidden = false;
      const row = this.view[first + i];
      if (r._row === row && !force) continue;
      r._row = row;
      MLR.clear(r);
      r.className = "vt-row" + ((first + i) % 2 ? " odd" : "") + (this.opts.rowClass ? " " + this.opts.rowClass(row) : "");
      if (this.opts.rowData) Object.assign(r.dataset, this.opts.rowData(row));
      for (const c of this.columns) {
        const v = c.render ? c.render(row) : MLR.fmt(row[c.key]);
        const cell = MLR.el("div", { class: "vt-cell" + (c.cls ? " " + c.cls : ""), role: "cell" });
        if (v instanceof Node) cell.append(v);
        else {
          cell.textContent = v;
          cell.title = v;
        }
        r.append(cell);
      }
    }
  };

  /* Column widths from the header and a sample of values (px). */
  MLR.widthOf = function (label, values) {
    let n = String(label).length + 2;
    for (let i = 0; i < values.length && i < 300; i++) n = Math.max(n, MLR.fmt(values[i]).length);
    return Math.min(360, Math.max(56, Math.round(n * 7.4 + 16)));
  };
  MLR.VTable = VTable;
})();
