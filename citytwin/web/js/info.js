// The info panel: properties (and results, charts) of whatever was clicked.

function formatValue(value) {
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(3).replace(/\.?0+$/, "");
  if (Array.isArray(value)) return value.map(formatValue).join(", ") || "–";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export class InfoPanel {
  constructor(elements, { onClose = () => {} } = {}) {
    this.el = elements; // {panel, title, body, close}
    this.onClose = onClose;
    this.el.close.addEventListener("click", () => this.hide());
  }

  // sections: [{heading?, properties: {name: value}}]; extra: DOM nodes appended below.
  show(title, sections, extra = []) {
    this.el.title.textContent = title;
    const nodes = [];
    for (const section of sections) {
      if (section.heading) {
        const h = document.createElement("h2");
        h.textContent = section.heading;
        nodes.push(h);
      }
      const table = document.createElement("table");
      table.className = "props";
      for (const [name, value] of Object.entries(section.properties)) {
        const row = table.insertRow();
        const th = document.createElement("th");
        th.textContent = name;
        const td = row.insertCell();
        td.textContent = formatValue(value);
        td.dataset.property = name;
        row.prepend(th);
      }
      nodes.push(table);
    }
    this.el.body.replaceChildren(...nodes, ...extra);
    this.el.panel.hidden = false;
  }

  hide() {
    this.el.panel.hidden = true;
    this.onClose();
  }
}
