// DOM helpers shared by the views. Text from the server is only ever set as text nodes or
// attribute values, never parsed as HTML.
//
// SPDX-License-Identifier: MIT

/**
 * Creates an element. attrs: attributes, plus "class", "dataset" (object) and "on" (event
 * name to listener); children: strings, nodes, or null/false to skip.
 */
export function el(tag, attrs = {}, ...children) {
	const node = document.createElement(tag);
	for (const [name, value] of Object.entries(attrs)) {
		if (value === undefined || value === null || value === false) continue;
		if (name === 'class') node.className = value;
		else if (name === 'dataset') Object.assign(node.dataset, value);
		else if (name === 'on') for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
		else node.setAttribute(name, value === true ? '' : String(value));
	}
	append(node, children);
	return node;
}

function append(node, children) {
	for (const child of children) {
		if (child === null || child === undefined || child === false) continue;
		if (Array.isArray(child)) append(node, child);
		else node.append(child instanceof Node ? child : String(child));
	}
}

/** Formats an RFC 3339 timestamp as "2026-02-07 10:30:00 UTC", or "–" when absent. */
export function formatTime(text) {
	if (!text) return '–';
	return text.replace('T', ' ').replace(/Z$/, ' UTC');
}

/** Says how long ago an RFC 3339 timestamp was: "12 s ago", "3 min ago", "2 h ago". */
export function timeAgo(text, now = Date.now()) {
	if (!text) return '–';
	const seconds = Math.max(0, Math.round((now - Date.parse(text)) / 1000));
	if (seconds < 120) return `${seconds} s ago`;
	if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
	if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
	return `${Math.round(seconds / 86400)} days ago`;
}

/** Returns a <time> element showing the UTC time, with "N s ago" as its tooltip. */
export function timeCell(text) {
	if (!text) return '–';
	return el('time', { datetime: text, title: timeAgo(text) }, formatTime(text));
}

export function statusBadge(status) {
	return el('span', { class: `badge status-${status}`, dataset: { status } }, status);
}

/** Returns a <pre> with value as indented JSON, or a muted "none" when absent. */
export function jsonBlock(value, testId) {
	if (value === undefined) return el('p', { class: 'muted', 'data-testid': testId }, 'none');
	return el('pre', { class: 'json', 'data-testid': testId }, JSON.stringify(value, null, 2));
}

/** Returns a link to the detail page of one job. */
export function jobLink(requestId) {
	return el('a', { href: `#/jobs/${encodeURIComponent(requestId)}`, class: 'mono' }, requestId);
}

export function clear(node) {
	node.replaceChildren();
}

/**
 * Shows a message above the view: kind "error" (red) or "info" (blue). A message from the
 * refresh (source "refresh") goes away at the next successful refresh. The result of an
 * operator's action stays until the next message or view.
 */
export function showBanner(text, kind = 'error', source = 'action') {
	const banner = document.getElementById('banner');
	banner.className = `banner banner-${kind}`;
	banner.dataset.kind = kind;
	banner.dataset.source = source;
	banner.textContent = text;
	banner.hidden = false;
}

export function hideBanner() {
	document.getElementById('banner').hidden = true;
}

/**
 * Asks the operator to confirm an action in a modal dialog; resolves to true when the
 * confirm button (labelled actionLabel) was pressed, false for "Keep" or Escape.
 */
export function askConfirm(text, actionLabel) {
	const dialog = document.getElementById('confirm-dialog');
	document.getElementById('confirm-text').textContent = text;
	document.getElementById('confirm-yes').textContent = actionLabel;
	dialog.returnValue = '';
	return new Promise((resolve) => {
		dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
		dialog.showModal();
	});
}
