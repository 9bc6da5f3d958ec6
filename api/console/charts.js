// Charts as SVG, drawn with DOM calls (no library, no inline code, no innerHTML): a
// line chart for series over time and a bar chart for categories. Every data point is
// an element with class `point` and its series and value in data attributes, so a test
// (or a screen reader, through the <title>s) can read what is drawn.

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 640;
const HEIGHT = 220;
const PAD = { top: 12, right: 12, bottom: 28, left: 44 };

function el(name, attributes = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A round upper bound for the axis: 1, 2 or 5 times a power of ten. */
function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((m) => m >= value);
}

function frame(svg, label, max) {
  svg.replaceChildren();
  svg.setAttribute('viewBox', `0 0 ${WIDTH} ${HEIGHT}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  svg.append(el('title', {}, label));
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  for (const fraction of [0, 0.5, 1]) {
    const y = PAD.top + plotHeight * (1 - fraction);
    svg.append(el('line', { x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y, class: 'grid' }));
    const value = max * fraction;
    svg.append(el('text', { x: PAD.left - 6, y: y + 4, class: 'axis', 'text-anchor': 'end' },
      Number.isInteger(value) ? value : value.toFixed(1)));
  }
  return (value) => PAD.top + plotHeight * (1 - value / max);
}

function legend(svg, names) {
  names.forEach((name, i) => {
    const x = PAD.left + i * 130;
    svg.append(el('rect', { x, y: HEIGHT - 12, width: 10, height: 10, class: `swatch series-${i}` }));
    svg.append(el('text', { x: x + 14, y: HEIGHT - 3, class: 'axis' }, name));
  });
}

/**
 * Series over shared x labels: `{ labels: [...], series: [{ name, values: [number|null] }] }`.
 * A null value is a gap (no sample).
 */
export function lineChart(svg, label, { labels, series }) {
  const all = series.flatMap((s) => s.values).filter((v) => v !== null);
  const y = frame(svg, label, niceMax(Math.max(0, ...all)));
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const x = (i) => PAD.left + (labels.length <= 1 ? plotWidth / 2 : (plotWidth * i) / (labels.length - 1));
  const ticks = Math.min(labels.length, 6);
  for (let t = 0; t < ticks; t += 1) {
    const i = Math.round((t * (labels.length - 1)) / Math.max(1, ticks - 1));
    // The first and last labels lean inwards, so neither is cut at the edge.
    const anchor = ticks > 1 && t === 0 ? 'start' : ticks > 1 && t === ticks - 1 ? 'end' : 'middle';
    svg.append(el('text', { x: x(i), y: HEIGHT - 16, class: 'axis', 'text-anchor': anchor }, labels[i]));
  }
  series.forEach((s, n) => {
    let path = '';
    let pen = 'M';
    s.values.forEach((value, i) => {
      if (value === null) {
        pen = 'M';
        return;
      }
      path += `${pen}${x(i).toFixed(1)},${y(value).toFixed(1)} `;
      pen = 'L';
    });
    if (path) svg.append(el('path', { d: path, class: `line series-${n}` }));
    s.values.forEach((value, i) => {
      if (value === null) return;
      const point = el('circle', {
        cx: x(i), cy: y(value), r: 2.5, class: `point series-${n}`,
        'data-series': s.name, 'data-value': value, 'data-label': labels[i],
      });
      point.append(el('title', {}, `${s.name}, ${labels[i]}: ${value}`));
      svg.append(point);
    });
  });
  legend(svg, series.map((s) => s.name));
}

/** Categories, each with one value per series: `{ labels, series: [{ name, values }] }`. */
export function barChart(svg, label, { labels, series }) {
  const y = frame(svg, label, niceMax(Math.max(0, ...series.flatMap((s) => s.values))));
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const slot = plotWidth / Math.max(1, labels.length);
  const bar = Math.max(1, (slot * 0.8) / series.length);
  labels.forEach((name, i) => {
    const left = PAD.left + slot * i + slot * 0.1;
    if (labels.length <= 24 || i % Math.ceil(labels.length / 12) === 0) {
      svg.append(el('text', { x: left + (bar * series.length) / 2, y: HEIGHT - 16, class: 'axis', 'text-anchor': 'middle' }, name));
    }
    series.forEach((s, n) => {
      const value = s.values[i];
      const top = y(value);
      const rect = el('rect', {
        x: left + bar * n, y: top, width: bar, height: Math.max(0, y(0) - top), class: `point bar series-${n}`,
        'data-series': s.name, 'data-value': value, 'data-label': name,
      });
      rect.append(el('title', {}, `${s.name}, ${name}: ${value}`));
      svg.append(rect);
    });
  });
  legend(svg, series.map((s) => s.name));
}
