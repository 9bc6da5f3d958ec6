// The reference Communication Center client: a customer's, a staff member's or a crew
// member's view of conversations over in-app messages, SMS, email and calls, live over
// the WebSocket. A crew member sees their crew's projects, each project's messages and
// its dispatch, which they acknowledge here.
// No framework, no build step. The token lives in this tab's sessionStorage and travels
// in the Authorization header (and, as browsers allow nothing else, in the WebSocket's
// query). Every value from the API reaches the page as text, never as HTML.

const TOKEN_KEY = 'commcenter.portal.token';
const PAGE = 30;
const TYPING_EXPIRES_MS = 6000;
const TYPING_EVERY_MS = 2000;
const CHANNELS = ['inapp', 'sms', 'email', 'phone'];

const $ = (selector) => document.querySelector(selector);

// ---- the API ------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** The API's error in words: its message, and the wait when it asks for one. */
async function failure(response) {
  const data = await response.json().catch(() => null);
  let message = data?.error?.message ?? `the server answered ${response.status}`;
  const wait = response.headers.get('Retry-After');
  if (response.status === 429) message = `Too many requests: try again in ${wait ?? 'a few'} s (${message})`;
  else if (response.status === 503) message = `The service is busy or down: try again in ${wait ?? 'a few'} s (${message})`;
  return new ApiError(response.status, message);
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method, headers, cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, `Cannot reach the server (${e.message}).`);
  }
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

/** A file the API serves (thumbnails, downloads), as a blob URL: they need the token. */
async function fileUrl(path) {
  for (let tries = 0; tries < 20; tries += 1) {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${token()}` } });
    if (response.status === 409) {
      // Still processing: wait as told.
      const wait = Number(response.headers.get('Retry-After') ?? 1);
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
      continue;
    }
    if (!response.ok) throw await failure(response);
    return URL.createObjectURL(await response.blob());
  }
  throw new ApiError(409, 'the file is still being processed');
}

// ---- errors ---------------------------------------------------------------------------

function showError(error) {
  $('#error-text').textContent = error.message ?? String(error);
  $('#error').hidden = false;
  if (error.status === 401) signOut('Your token was refused (expired or wrong): sign in again.');
}

function guarded(action) {
  return async (...args) => {
    try {
      await action(...args);
    } catch (e) {
      showError(e);
    }
  };
}

// ---- who is signed in -----------------------------------------------------------------

/** The token's claims (sub, role, customer_id), read from its payload. */
function claimsOf(raw) {
  const part = raw.split('.')[1];
  if (!part) throw new ApiError(0, 'That is not a token (it should have three parts separated by dots).');
  try {
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    return JSON.parse(json);
  } catch {
    throw new ApiError(0, 'That is not a token (its payload cannot be read).');
  }
}

const state = {
  me: null, // { sub, role, customer_id }
  customer: null, // the open conversation
  project: null, // a crew member's open project (its messages only)
  channel: 'inapp',
  cursor: null, // older messages of the open conversation and channel
  loadingOlder: false,
  shown: new Map(), // communication id → its <li>
  online: new Map(), // user id → { role, customer }, everyone the server told us is online
  customerUsers: new Map(), // customer id → user ids seen writing in it
  typingTimer: null,
  lastTyping: 0,
  pending: [], // files chosen, not yet sent
  templates: [],
  socket: null,
  seq: null,
  retry: 500,
  resuming: false,
  listCursor: null,
};

const isStaff = () => state.me && state.me.role !== 'customer';
const isCrew = () => state.me?.role === 'crew';

// ---- the conversation list (staff) ----------------------------------------------------

function conversationRow(c) {
  const li = document.createElement('li');
  const button = document.createElement('button');
  button.type = 'button';
  button.dataset.testid = 'conversation';
  button.dataset.customer = c.customer_id;
  button.className = 'conversation-row';
  if (c.customer_id === state.customer) button.setAttribute('aria-current', 'true');
  const name = document.createElement('strong');
  name.textContent = c.customer_id;
  const status = document.createElement('span');
  status.className = `status status-${c.status}`;
  status.textContent = c.status;
  const unread = document.createElement('span');
  unread.className = 'unread';
  unread.dataset.testid = 'unread';
  unread.textContent = c.unread_count > 0 ? String(c.unread_count) : '';
  unread.hidden = !(c.unread_count > 0);
  const last = document.createElement('span');
  last.className = 'last';
  last.textContent = c.last_message ? `${c.last_message.type}: ${c.last_message.message || '(files)'}` : '';
  button.append(name, status, unread, last);
  button.addEventListener('click', () => openConversation(c.customer_id));
  li.append(button);
  return li;
}

const loadConversations = guarded(async (more = false) => {
  const params = new URLSearchParams({ limit: '50' });
  const status = $('#status-filter').value;
  if (status) params.set('status', status);
  if (more && state.listCursor) params.set('cursor', state.listCursor);
  const page = await api('GET', `/api/communications/conversations?${params}`);
  const list = $('#conversations');
  if (!more) list.replaceChildren();
  for (const c of page.conversations) list.append(conversationRow(c));
  state.listCursor = page.next_cursor;
  $('#more-conversations').hidden = !page.next_cursor;
});

/** A search highlight (HTML-escaped text with <mark>s) as DOM nodes, never as HTML. */
function highlighted(html) {
  const decode = (text) => text
    .replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'").replace(/&#x27;/g, "'").replace(/&amp;/g, '&');
  const nodes = [];
  html.split(/(<mark>|<\/mark>)/).reduce((inMark, piece) => {
    if (piece === '<mark>') return true;
    if (piece === '</mark>') return false;
    if (piece) {
      if (inMark) {
        const mark = document.createElement('mark');
        mark.textContent = decode(piece);
        nodes.push(mark);
      } else nodes.push(document.createTextNode(decode(piece)));
    }
    return inMark;
  }, false);
  return nodes;
}

const search = guarded(async () => {
  const query = $('#search').value.trim();
  const results = $('#results');
  if (!query) {
    results.hidden = true;
    $('#conversations').hidden = false;
    return;
  }
  const body = { query, limit: 20 };
  if (!isStaff()) body.customer_id = state.me.customer_id;
  const found = await api('POST', '/api/communications/search', body);
  results.replaceChildren();
  for (const c of found.communications) {
    const li = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'result';
    button.dataset.testid = 'search-result';
    const where = document.createElement('strong');
    where.textContent = `${c.customer_id} · ${c.type} · ${new Date(c.created_at).toLocaleString()}`;
    const text = document.createElement('span');
    text.append(...highlighted(c.highlight ?? ''));
    button.append(where, text);
    button.addEventListener('click', () => openConversation(c.customer_id, c.type));
    li.append(button);
    results.append(li);
  }
  if (!found.communications.length) {
    const li = document.createElement('li');
    li.textContent = 'Nothing found.';
    results.append(li);
  }
  results.hidden = false;
  $('#conversations').hidden = true;
});

// ---- one conversation -----------------------------------------------------------------

function icon(category) {
  return { image: '🖼', video: '🎬', audio: '🎵', document: '📄' }[category] ?? '📎';
}

function thumbnail(path, filename) {
  const img = document.createElement('img');
  img.alt = filename;
  img.dataset.testid = 'thumbnail';
  fileUrl(path).then((url) => {
    // The picture makes the list taller: a reader at the bottom stays there.
    const list = $('#messages');
    const stick = nearBottom(list);
    img.addEventListener('load', () => { if (stick) list.scrollTop = list.scrollHeight; }, { once: true });
    img.src = url;
  }).catch(showError);
  return img;
}

function attachmentNode(file) {
  const item = document.createElement('span');
  item.className = 'attachment';
  item.dataset.fileId = file.file_id;
  const category = file.file_category ?? (String(file.file_type).startsWith('image/') ? 'image' : 'document');
  if (file.thumbnail_url && category === 'image') {
    item.append(thumbnail(file.thumbnail_url, file.filename));
  } else {
    // An image still being processed gets its thumbnail when `file.status` says so.
    const mark = document.createElement('span');
    mark.className = 'file-icon';
    mark.setAttribute('aria-hidden', 'true');
    mark.textContent = icon(category);
    item.append(mark);
  }
  const link = document.createElement('a');
  link.href = '#';
  link.textContent = `${file.filename} (${Math.ceil((file.file_size ?? 0) / 1024)} KB)`;
  link.dataset.testid = 'download';
  link.addEventListener('click', guarded(async (event) => {
    event.preventDefault();
    const url = await fileUrl(file.url);
    const a = document.createElement('a');
    a.href = url;
    a.download = file.filename;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }));
  item.append(link);
  return item;
}

/** Is this message one I wrote (or my side sent)? Receipts show on those. */
function mine(record) {
  return isStaff() ? record.direction === 'outbound' : record.direction === 'inbound';
}

function receiptText(status) {
  if (status === 'read') return '✓✓';
  if (status === 'failed') return '!';
  if (status === 'queued') return '…';
  return '✓';
}

/** A message record (listing or event) in the shape the list needs. */
function normalise(record) {
  return {
    id: record.id ?? record.communication_id,
    customer_id: record.customer_id,
    type: record.type ?? record.communication_type,
    direction: record.direction,
    sender_id: record.sender_id,
    sender_role: record.sender_role,
    message: record.message ?? '',
    subject: record.subject,
    attachments: record.attachments ?? [],
    status: record.status,
    created_at: record.created_at,
    edited_at: record.edited_at,
    deleted: record.deleted ?? false,
    // Listings say `visibility`; events say `internal`.
    internal: record.visibility === 'internal' || record.internal === true,
    project_id: record.project_id,
  };
}

function renderMessage(m) {
  const li = document.createElement('li');
  li.dataset.testid = 'message';
  li.dataset.id = m.id;
  li.className = `message ${mine(m) ? 'mine' : 'theirs'}`;
  const meta = document.createElement('span');
  meta.className = 'meta';
  if (m.internal) {
    li.classList.add('internal');
    const badge = document.createElement('span');
    badge.className = 'internal-badge';
    badge.dataset.testid = 'internal-badge';
    badge.textContent = 'Internal';
    badge.title = 'Staff and the crew only: never shown to the customer';
    meta.append(badge);
  }
  meta.append(`${m.sender_role === 'customer' ? 'Customer' : m.sender_id} · ${new Date(m.created_at).toLocaleTimeString()}`);
  li.append(meta);
  if (m.subject) {
    const subject = document.createElement('strong');
    subject.className = 'subject';
    subject.textContent = m.subject;
    li.append(subject);
  }
  const text = document.createElement('p');
  text.className = 'text';
  text.dataset.testid = 'message-text';
  li.append(text);
  const files = document.createElement('div');
  files.className = 'attachments';
  li.append(files);
  const receipt = document.createElement('span');
  receipt.className = 'receipt';
  receipt.dataset.testid = 'receipt';
  li.append(receipt);
  updateMessage(li, m);
  return li;
}

/** Edit and delete, on one's own in-app messages. Deleting asks to be clicked twice. */
function ownActions(li) {
  const actions = document.createElement('div');
  actions.className = 'message-actions';
  const edit = document.createElement('button');
  edit.type = 'button';
  edit.textContent = 'Edit';
  edit.dataset.testid = 'edit';
  edit.addEventListener('click', () => startEdit(li));
  const remove = document.createElement('button');
  remove.type = 'button';
  remove.textContent = 'Delete';
  remove.dataset.testid = 'delete';
  remove.addEventListener('click', guarded(async () => {
    if (!remove.dataset.armed) {
      remove.dataset.armed = 'yes';
      remove.textContent = 'Delete for everyone?';
      setTimeout(() => { delete remove.dataset.armed; remove.textContent = 'Delete'; }, 5000);
      return;
    }
    const gone = await api('DELETE', `/api/communications/${li.dataset.id}`);
    updateMessage(li, normalise(gone));
  }));
  actions.append(edit, remove);
  return actions;
}

function startEdit(li) {
  const text = li.querySelector('.text');
  if (li.querySelector('.edit-form')) return;
  const form = document.createElement('form');
  form.className = 'edit-form';
  const input = document.createElement('textarea');
  input.className = 'edit-text';
  input.dataset.testid = 'edit-text';
  input.setAttribute('aria-label', 'The message, edited');
  input.value = li.dataset.text ?? '';
  const save = document.createElement('button');
  save.type = 'submit';
  save.textContent = 'Save';
  save.dataset.testid = 'save-edit';
  const cancel = document.createElement('button');
  cancel.type = 'button';
  cancel.textContent = 'Cancel';
  const close = () => { form.remove(); text.hidden = false; };
  cancel.addEventListener('click', close);
  form.addEventListener('submit', guarded(async (event) => {
    event.preventDefault();
    const edited = await api('PATCH', `/api/communications/${li.dataset.id}`, { message: input.value });
    close();
    updateMessage(li, normalise(edited));
  }));
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    } else if (event.key === 'Escape') close();
  });
  form.append(input, save, cancel);
  text.hidden = true;
  text.after(form);
  input.focus();
}

function updateMessage(li, m) {
  const text = li.querySelector('.text');
  if (m.deleted) {
    text.textContent = 'This message was deleted.';
    li.classList.add('deleted');
    li.querySelector('.attachments').replaceChildren();
    li.querySelector('.message-actions')?.remove();
  } else {
    li.dataset.text = m.message;
    text.textContent = m.message;
    if (m.type === 'inapp' && m.sender_id === state.me.sub && !li.querySelector('.message-actions')) {
      li.querySelector('.receipt').before(ownActions(li));
    }
    if (m.edited_at) {
      const edited = document.createElement('small');
      edited.textContent = ' (edited)';
      text.append(edited);
    }
    const files = li.querySelector('.attachments');
    if (!files.childElementCount && m.attachments.length) files.append(...m.attachments.map(attachmentNode));
  }
  const receipt = li.querySelector('.receipt');
  receipt.hidden = !mine(m);
  receipt.textContent = receiptText(m.status);
  receipt.title = m.status;
  li.dataset.status = m.status;
  li.dataset.direction = m.direction;
}

function nearBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
}

/** Adds a message where it belongs (by time), or updates it if shown. */
function place(m, { scroll = false } = {}) {
  const list = $('#messages');
  const existing = state.shown.get(m.id);
  if (existing) {
    updateMessage(existing, m);
    return;
  }
  const wasNear = nearBottom(list);
  const li = renderMessage(m);
  li.dataset.at = m.created_at;
  const after = [...list.children].find((other) => other.dataset.at > m.created_at);
  list.insertBefore(li, after ?? null);
  state.shown.set(m.id, li);
  if (scroll || wasNear) list.scrollTop = list.scrollHeight;
  markReadIfSeen();
}

const loadMessages = guarded(async (older = false) => {
  if (older && (!state.cursor || state.loadingOlder)) return;
  state.loadingOlder = true;
  try {
    // A crew member lists one project of their crew; everyone else a customer's messages.
    const params = new URLSearchParams(state.project
      ? { project_id: state.project, type: state.channel, limit: String(PAGE) }
      : { customer_id: state.customer, type: state.channel, limit: String(PAGE) });
    if (older) params.set('cursor', state.cursor);
    const page = await api('GET', `/api/communications?${params}`);
    const list = $('#messages');
    const before = list.scrollHeight;
    for (const record of page.communications) {
      noteWriter(record);
      place(normalise(record));
    }
    state.cursor = page.next_cursor;
    if (older) list.scrollTop += list.scrollHeight - before; // Stay on what was read.
    else list.scrollTop = list.scrollHeight;
  } finally {
    state.loadingOlder = false;
  }
  // A page too short to scroll could never ask for the older ones: ask now.
  const list = $('#messages');
  if (state.cursor && list.scrollHeight <= list.clientHeight) await loadMessages(true);
  showPresence();
});

function noteWriter(record) {
  if (record.sender_role !== 'customer' || !record.sender_id) return;
  const users = state.customerUsers.get(record.customer_id) ?? new Set();
  users.add(record.sender_id);
  state.customerUsers.set(record.customer_id, users);
}

/** Messages from the other side, in-app, on screen and not read: mark them read. */
const markReadIfSeen = () => {
  if (document.visibilityState !== 'visible' || state.channel !== 'inapp') return;
  for (const li of state.shown.values()) {
    if (li.classList.contains('theirs') && !['read', 'failed'].includes(li.dataset.status) && !li.dataset.marking) {
      li.dataset.marking = 'yes';
      api('POST', `/api/communications/${li.dataset.id}/mark-read`, {}).catch(() => { delete li.dataset.marking; });
    }
  }
};

function showPresence() {
  const presence = $('#presence');
  // A crew member is told nobody's presence.
  presence.hidden = isCrew();
  let online;
  if (isStaff()) {
    // A customer's presence names their conversation; users seen writing in it count too.
    const users = state.customerUsers.get(state.customer) ?? new Set();
    online = [...state.online].some(([user, who]) => who.customer === state.customer || users.has(user));
  } else {
    online = [...state.online.values()].some((who) => who.role === 'staff' || who.role === 'operator');
  }
  presence.textContent = online ? 'online' : 'offline';
  presence.className = `presence ${online ? 'on' : 'off'}`;
  presence.title = isStaff() ? 'the customer' : 'support';
}

function showChannelFields() {
  const staff = isStaff();
  const writable = staff || state.channel === 'inapp';
  $('#compose').hidden = !writable;
  $('#read-only').hidden = writable;
  $('#read-only').textContent = writable ? '' : `Your ${state.channel} history with us. Write to us here in the In-app tab.`;
  for (const field of document.querySelectorAll('#channel-fields .field')) {
    const forChannel = field.dataset.for.split(' ').includes(state.channel);
    field.hidden = !forChannel || (field.hasAttribute('data-staff') && (!staff || isCrew()));
  }
  // Internal notes: in-app, written by staff or the crew, never seen by the customer.
  $('#internal-choice').hidden = !staff || state.channel !== 'inapp';
  // A crew member writes in-app only.
  for (const tab of document.querySelectorAll('[role="tab"]')) tab.hidden = isCrew() && tab.dataset.channel !== 'inapp';
  $('#composer').placeholder = state.channel === 'phone'
    ? 'Notes on the call (Enter logs it)'
    : 'Write a message (Enter sends, Shift+Enter for a new line)';
  fillTemplates();
}

const selectChannel = guarded(async (channel) => {
  state.channel = channel;
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.setAttribute('aria-selected', String(tab.dataset.channel === channel));
    tab.tabIndex = tab.dataset.channel === channel ? 0 : -1;
  }
  state.shown.clear();
  state.cursor = null;
  $('#messages').replaceChildren();
  showChannelFields();
  await loadMessages();
});

const openConversation = guarded(async (customer, channel = 'inapp', project = null) => {
  state.customer = customer;
  state.project = project?.id ?? null;
  $('#conversation-title').textContent = project
    ? `${project.title} · ${customer}`
    : isStaff() ? customer : 'Your conversation';
  for (const row of document.querySelectorAll('[data-testid="project"]')) {
    row.toggleAttribute('aria-current', row.dataset.project === state.project);
  }
  $('#conversation').hidden = false;
  document.body.classList.add('reading');
  for (const row of document.querySelectorAll('[data-testid="conversation"]')) {
    row.toggleAttribute('aria-current', row.dataset.customer === customer);
  }
  clearTyping();
  await selectChannel(channel);
  $('#composer').focus();
});

// ---- a crew member's projects and dispatches -------------------------------------------

function projectRow(project, dispatch) {
  const li = document.createElement('li');
  const row = document.createElement('div');
  row.className = 'project-row';
  const open = document.createElement('button');
  open.type = 'button';
  open.dataset.testid = 'project';
  open.dataset.project = project.id;
  open.className = 'conversation-row';
  const title = document.createElement('strong');
  title.textContent = project.title;
  const status = document.createElement('span');
  status.className = `status status-${project.status}`;
  status.textContent = project.status.replace('_', ' ');
  const where = document.createElement('span');
  where.className = 'last';
  where.textContent = `${project.customer_id} · ${project.address}`;
  open.append(title, status, where);
  open.addEventListener('click', () => openConversation(project.customer_id, 'inapp', project));
  row.append(open);
  if (dispatch && !dispatch.arrived_at && project.status === 'dispatched') {
    const line = document.createElement('div');
    line.className = 'dispatch';
    line.dataset.testid = 'dispatch';
    const what = document.createElement('span');
    const eta = dispatch.eta ? `, arriving ${new Date(dispatch.eta).toLocaleTimeString()}` : '';
    what.textContent = `Dispatched${eta}${dispatch.note ? `: ${dispatch.note}` : ''}`;
    line.append(what);
    if ((dispatch.acknowledged_by ?? []).includes(state.me.sub)) {
      const done = document.createElement('span');
      done.className = 'acked';
      done.dataset.testid = 'acknowledged';
      done.textContent = '✓ acknowledged';
      line.append(done);
    } else {
      const ack = document.createElement('button');
      ack.type = 'button';
      ack.dataset.testid = 'acknowledge';
      ack.textContent = 'Acknowledge';
      ack.addEventListener('click', guarded(async () => {
        ack.disabled = true;
        await api('POST', `/api/dispatches/${dispatch.id}/ack`, {});
        await loadProjects();
      }));
      line.append(ack);
    }
    row.append(line);
  }
  li.append(row);
  return li;
}

const loadProjects = guarded(async () => {
  const found = await api('GET', '/api/projects?limit=100');
  const open = found.projects.filter((p) => !['done', 'cancelled'].includes(p.status));
  // Each dispatched project's latest dispatch, with who acknowledged it.
  const details = await Promise.all(open.map((p) => (p.status === 'dispatched'
    ? api('GET', `/api/projects/${p.id}`) : Promise.resolve(p))));
  $('#project-list').replaceChildren(...details.map((p) => projectRow(p, p.dispatches?.[0])));
  if (!open.length) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = 'No open project is assigned to your crew.';
    $('#project-list').append(li);
  }
});

// ---- templates (staff) ------------------------------------------------------------------

async function loadTemplates() {
  if (!isStaff() || isCrew()) return;
  const found = await api('GET', '/api/communications/templates');
  state.templates = found.templates ?? [];
  fillTemplates();
}

function fillTemplates() {
  const select = $('#template');
  const options = state.templates
    .filter((t) => t.type === state.channel)
    .map((t) => {
      const option = new Option(t.name, t.id);
      option.dataset.variables = JSON.stringify(t.variables ?? []);
      return option;
    });
  select.replaceChildren(new Option('none', ''), ...options);
  showVariables();
}

function showVariables() {
  const box = $('#variables');
  box.replaceChildren();
  const chosen = $('#template').selectedOptions[0];
  const variables = chosen?.value ? JSON.parse(chosen.dataset.variables) : [];
  for (const name of variables) {
    const field = document.createElement('div');
    field.className = 'field';
    const label = document.createElement('label');
    label.htmlFor = `var-${name}`;
    label.textContent = name;
    const input = document.createElement('input');
    input.id = `var-${name}`;
    input.dataset.variable = name;
    field.append(label, input);
    box.append(field);
  }
  $('#composer').disabled = Boolean(chosen?.value);
}

// ---- attachments ------------------------------------------------------------------------

function addFiles(files) {
  for (const file of files) {
    const entry = { file, preview: file.type.startsWith('image/') ? URL.createObjectURL(file) : null };
    state.pending.push(entry);
  }
  showPending();
}

function showPending() {
  const list = $('#pending');
  list.replaceChildren();
  state.pending.forEach((entry, index) => {
    const li = document.createElement('li');
    li.dataset.testid = 'pending-file';
    if (entry.preview) {
      const img = document.createElement('img');
      img.src = entry.preview;
      img.alt = `preview of ${entry.file.name}`;
      li.append(img);
    } else {
      const mark = document.createElement('span');
      mark.className = 'file-icon';
      mark.textContent = icon('document');
      li.append(mark);
    }
    const name = document.createElement('span');
    name.textContent = `${entry.file.name} (${Math.ceil(entry.file.size / 1024)} KB)`;
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.textContent = '×';
    remove.setAttribute('aria-label', `Remove ${entry.file.name}`);
    remove.addEventListener('click', () => {
      if (entry.preview) URL.revokeObjectURL(entry.preview);
      state.pending.splice(index, 1);
      showPending();
    });
    li.append(name, remove);
    list.append(li);
  });
}

/** Why the API refused a file, in words. */
function refusal(failed) {
  return `${failed.filename}: ${failed.error?.message ?? failed.error}`;
}

/** Uploads the chosen files with a progress bar; returns the ids of those accepted. */
function upload() {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append('customer_id', state.customer);
    for (const { file } of state.pending) form.append('file', file, file.name);
    const request = new XMLHttpRequest();
    request.open('POST', '/api/communications/upload');
    request.setRequestHeader('Authorization', `Bearer ${token()}`);
    const bar = $('#upload-progress');
    $('#upload').hidden = false;
    bar.value = 0;
    request.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) {
        bar.value = event.loaded / event.total;
        $('#upload-text').textContent = `Uploading ${Math.round(bar.value * 100)} %`;
      }
    });
    request.addEventListener('load', () => {
      let data = null;
      try { data = JSON.parse(request.responseText); } catch { /* not JSON */ }
      bar.value = 1;
      $('#upload-text').textContent = 'Uploaded';
      if (request.status >= 400) {
        const refused = (data?.failed ?? []).map(refusal).join('; ');
        const message = refused || data?.error?.message || `the upload failed (${request.status})`;
        reject(new ApiError(request.status, `Not sent: ${message}`));
        return;
      }
      const refused = data.failed ?? [];
      if (refused.length) showError(new Error(`Not attached: ${refused.map(refusal).join('; ')}`));
      resolve(data.files.map((f) => f.file_id));
    });
    request.addEventListener('error', () => reject(new ApiError(0, 'The upload could not reach the server.')));
    request.send(form);
  });
}

// ---- sending ----------------------------------------------------------------------------

function variablesGiven() {
  const variables = {};
  // A field left empty is not given, so the API names it as missing.
  for (const input of document.querySelectorAll('#variables input')) {
    if (input.value.trim()) variables[input.dataset.variable] = input.value;
  }
  return variables;
}

const send = guarded(async () => {
  const text = $('#composer').value;
  const template = $('#template').value;
  if (!text.trim() && !state.pending.length && !template && state.channel !== 'phone') return;
  $('#send').disabled = true;
  try {
    const attachments = state.pending.length ? await upload() : [];
    const body = { customer_id: state.customer };
    if (state.project) body.project_id = state.project;
    if (state.channel === 'inapp' && $('#internal').checked) body.visibility = 'internal';
    if (template) Object.assign(body, { template_id: template, variables: variablesGiven() });
    else if (state.channel !== 'phone') body.message = text;
    if (attachments.length) body.attachments = attachments;
    let path = '/api/messages/send';
    if (state.channel === 'sms') {
      path = '/api/integrations/ringcentral/sms';
      body.to = $('#to').value;
    } else if (state.channel === 'email') {
      path = '/api/integrations/gmail/send';
      Object.assign(body, { to: $('#to').value, subject: $('#subject').value });
    } else if (state.channel === 'phone') {
      path = '/api/integrations/ringcentral/call-log';
      Object.assign(body, {
        phone: $('#call-phone').value,
        direction: $('#call-direction').value,
        duration: Number($('#call-duration').value),
        notes: text || undefined,
      });
    }
    const sent = await api('POST', path, body);
    // What was asked (an internal note's visibility) where the answer does not say.
    place(normalise({
      sender_id: state.me.sub, sender_role: state.me.role, ...body, ...sent, type: sent.type ?? state.channel,
    }), { scroll: true });
    $('#composer').value = '';
    if (template) {
      $('#template').value = '';
      showVariables();
    }
    for (const entry of state.pending) if (entry.preview) URL.revokeObjectURL(entry.preview);
    state.pending = [];
    showPending();
    // The finished bar stays a moment, so the sender sees the files went.
    setTimeout(() => { $('#upload').hidden = true; }, 3000);
    stopTyping();
    $('#error').hidden = true;
  } finally {
    $('#send').disabled = false;
    $('#composer').focus();
  }
});

// ---- typing -----------------------------------------------------------------------------

function sendFrame(frame) {
  if (state.socket?.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify(frame));
}

function typed() {
  const now = Date.now();
  if (state.channel !== 'inapp' || now - state.lastTyping < TYPING_EVERY_MS) return;
  state.lastTyping = now;
  sendFrame({ type: 'typing', customer_id: state.customer });
}

function stopTyping() {
  if (!state.lastTyping) return;
  state.lastTyping = 0;
  sendFrame({ type: 'typing', customer_id: state.customer, state: 'stop' });
}

function clearTyping() {
  clearTimeout(state.typingTimer);
  $('#typing').hidden = true;
  $('#typing').textContent = '';
}

function showTyping(frame) {
  if (frame.customer_id !== state.customer) return;
  if (frame.state === 'stop') {
    clearTyping();
    return;
  }
  const who = frame.role === 'customer' ? 'The customer' : isStaff() ? frame.user_id : 'Support';
  $('#typing').textContent = `${who} is typing…`;
  $('#typing').hidden = false;
  clearTimeout(state.typingTimer);
  state.typingTimer = setTimeout(clearTyping, TYPING_EXPIRES_MS);
}

// ---- the live connection ---------------------------------------------------------------

function setConnection(text) {
  const line = $('#connection');
  line.hidden = false;
  line.textContent = text;
  line.dataset.state = text === 'live' ? 'live' : 'down';
}

function connect() {
  const since = state.seq === null ? '' : `&since=${state.seq}`;
  state.resuming = since !== '';
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const socket = new WebSocket(
    `${scheme}://${location.host}/api/ws/${encodeURIComponent(state.me.sub)}?token=${encodeURIComponent(token())}${since}`,
  );
  state.socket = socket;
  socket.addEventListener('message', ({ data }) => {
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    handle(frame);
  });
  socket.addEventListener('open', () => { state.retry = 500; });
  socket.addEventListener('close', () => {
    if (state.socket !== socket) return; // Signed out, or replaced.
    setConnection('reconnecting…');
    state.retry = Math.min(state.retry * 2, 15000);
    setTimeout(() => { if (state.socket === socket) connect(); }, state.retry);
  });
}

const refetch = guarded(async () => {
  if (isCrew()) await loadProjects();
  else if (isStaff()) await loadConversations();
  if (state.customer) {
    state.shown.clear();
    $('#messages').replaceChildren();
    state.cursor = null;
    await loadMessages();
  }
  await loadPresence();
});

function handle(frame) {
  if (typeof frame.seq === 'number' && frame.type !== 'connected') state.seq = Math.max(state.seq ?? 0, frame.seq);
  switch (frame.type) {
    case 'connected':
      if (state.seq === null) state.seq = frame.seq;
      // A resumed connection is live once the replay is over (`recovered`).
      if (!state.resuming) setConnection('live');
      loadPresence();
      break;
    case 'recovered':
      if (!frame.recovered) refetch();
      setConnection('live');
      break;
    case 'message.new': {
      noteWriter(frame);
      const here = state.project ? frame.project_id === state.project : frame.customer_id === state.customer;
      if (here && frame.communication_type === state.channel) place(normalise(frame));
      if (isStaff() && !isCrew()) loadConversations();
      if (frame.customer_id === state.customer && frame.sender_id !== state.me.sub) clearTyping();
      showPresence();
      break;
    }
    case 'message.updated':
    case 'message.deleted':
    case 'communication.status': {
      const li = state.shown.get(frame.communication_id);
      if (!li) break;
      if (frame.type === 'communication.status') {
        li.dataset.status = frame.status;
        const receipt = li.querySelector('.receipt');
        receipt.textContent = receiptText(frame.status);
        receipt.title = frame.reason ? `${frame.status}: ${frame.reason}` : frame.status;
      } else if (frame.type === 'message.updated') {
        li.dataset.text = frame.message;
        const text = li.querySelector('.text');
        text.textContent = frame.message;
        const edited = document.createElement('small');
        edited.textContent = ' (edited)';
        text.append(edited);
      } else {
        li.classList.add('deleted');
        li.querySelector('.text').textContent = 'This message was deleted.';
        li.querySelector('.attachments').replaceChildren();
        li.querySelector('.message-actions')?.remove();
      }
      break;
    }
    case 'file.status':
      if (frame.status === 'ready' && frame.thumbnail_url) {
        for (const item of document.querySelectorAll(`.attachment[data-file-id="${CSS.escape(frame.file_id)}"]`)) {
          const mark = item.querySelector('.file-icon');
          if (mark) mark.replaceWith(thumbnail(frame.thumbnail_url, frame.filename));
        }
      } else if (frame.status === 'failed') {
        showError(new Error(`${frame.filename} could not be processed: ${frame.reason}`));
      }
      break;
    case 'conversation.status':
      if (isStaff() && !isCrew()) loadConversations();
      break;
    case 'dispatch.new':
    case 'dispatch.acknowledged':
    case 'project.arrived':
      if (isCrew()) loadProjects();
      break;
    case 'presence':
      if (frame.status === 'online') state.online.set(frame.user_id, { role: frame.role, customer: frame.customer_id });
      else state.online.delete(frame.user_id);
      showPresence();
      break;
    case 'typing':
      showTyping(frame);
      break;
    case 'error':
      showError(new Error(`The live connection refused a message: ${frame.message}`));
      break;
    default:
      break;
  }
}

async function loadPresence() {
  if (state.me.role === 'crew') return;
  const found = await api('GET', '/api/communications/online-users').catch(() => null);
  if (!found) return;
  state.online = new Map(found.online_users.map((u) => [u.user_id, { role: u.role, customer: u.customer_id }]));
  showPresence();
}

// ---- sign in and out ---------------------------------------------------------------------

const signIn = guarded(async (raw) => {
  const claims = claimsOf(raw);
  sessionStorage.setItem(TOKEN_KEY, raw);
  state.me = claims;
  // One call proves the token before anything else is shown (a crew member has no
  // conversation list: their crew's projects).
  await api('GET', claims.role === 'crew' ? '/api/projects?limit=1' : '/api/communications/conversations?limit=1');
  $('#login').hidden = true;
  $('#app').hidden = false;
  $('#sign-out').hidden = false;
  $('#error').hidden = true;
  $('#who').textContent = `${claims.sub} (${claims.role}${claims.customer_id ? `, ${claims.customer_id}` : ''})`;
  document.body.dataset.role = claims.role;
  setConnection('connecting…');
  connect();
  if (isCrew()) {
    $('#projects').hidden = false;
    $('#back').hidden = false;
    await loadProjects();
  } else if (isStaff()) {
    $('#inbox').hidden = false;
    $('#back').hidden = false;
    await Promise.all([loadConversations(), loadTemplates().catch(showError)]);
  } else {
    await openConversation(claims.customer_id);
  }
});

function signOut(note) {
  sessionStorage.removeItem(TOKEN_KEY);
  const socket = state.socket;
  state.socket = null;
  socket?.close();
  Object.assign(state, { me: null, customer: null, project: null, seq: null });
  $('#app').hidden = true;
  $('#inbox').hidden = true;
  $('#projects').hidden = true;
  $('#conversation').hidden = true;
  $('#sign-out').hidden = true;
  $('#connection').hidden = true;
  $('#login').hidden = false;
  $('#token').value = '';
  $('#who').textContent = note ?? '';
}

// ---- wiring --------------------------------------------------------------------------

$('#login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  signIn($('#token').value.trim());
});
$('#sign-out').addEventListener('click', () => signOut());
$('#error-dismiss').addEventListener('click', () => { $('#error').hidden = true; });
$('#search-form').addEventListener('submit', (event) => { event.preventDefault(); search(); });
$('#search').addEventListener('search', () => search());
$('#status-filter').addEventListener('change', () => loadConversations());
$('#more-conversations').addEventListener('click', () => loadConversations(true));
$('#back').addEventListener('click', () => document.body.classList.remove('reading'));
$('#template').addEventListener('change', showVariables);
for (const tab of document.querySelectorAll('[role="tab"]')) {
  tab.addEventListener('click', () => selectChannel(tab.dataset.channel));
  tab.addEventListener('keydown', (event) => {
    const i = CHANNELS.indexOf(tab.dataset.channel);
    const next = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (next === undefined) return;
    const channel = CHANNELS[(i + next + CHANNELS.length) % CHANNELS.length];
    selectChannel(channel);
    document.querySelector(`[data-channel="${channel}"]`).focus();
  });
}
$('#compose').addEventListener('submit', (event) => { event.preventDefault(); send(); });
$('#composer').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
$('#composer').addEventListener('input', typed);
$('#composer').addEventListener('blur', stopTyping);
$('#attach').addEventListener('change', (event) => {
  addFiles(event.target.files);
  event.target.value = '';
});
const drop = $('#drop');
drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (event) => {
  event.preventDefault();
  drop.classList.remove('over');
  addFiles(event.dataTransfer.files);
});
$('#messages').addEventListener('scroll', () => {
  if ($('#messages').scrollTop < 40) loadMessages(true);
});
document.addEventListener('visibilitychange', markReadIfSeen);

if (token()) signIn(token());
