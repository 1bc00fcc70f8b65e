// SafeMeet web app: talks to this daemon's HTTP API (/api/v1/rpc) and
// follows its events (/api/v1/events). No framework, nothing fetched from
// elsewhere. Text from others is only ever set as textContent, never as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
let csrf = document.querySelector('meta[name=csrf]').content;
const state = {
  me: null,
  names: new Map(),        // user id -> what to call them
  conversations: [],       // {key, target, roomId, title}
  open: null,              // the open conversation
  unread: {},              // room id -> count, kept in this browser
  cursor: null,            // the last event seen
  source: null,            // the EventSource
};

// --- talking to the daemon --------------------------------------------------

async function post(path, body) {
  return fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
    body: JSON.stringify(body),
  });
}

let nextId = 1;
async function rpc(method, params) {
  const r = await post('/api/v1/rpc', { jsonrpc: '2.0', id: nextId++, method, params: params || {} });
  if (r.status === 401) {
    showLogin('Your session ended. Log in again.');
    throw new Error('logged out');
  }
  if (!r.ok) throw new Error(await r.text());
  const answer = await r.json();
  if (answer.error) throw new Error(answer.error.message);
  return answer.result;
}

function say(text, isError) {
  const s = $('status');
  s.textContent = text;
  s.className = isError ? 'error' : '';
}

async function attempt(what, fn) {
  try {
    await fn();
  } catch (e) {
    if (e.message !== 'logged out') say(what + ': ' + e.message, true);
  }
}

// --- login ------------------------------------------------------------------

function showLogin(message) {
  if (state.source) state.source.close();
  state.source = null;
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('passphrase').focus();
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const button = event.submitter || $('login-form').querySelector('button');
  button.disabled = true;
  $('login-error').textContent = 'Checking…';
  try {
    const r = await post('/api/v1/login', { passphrase: $('passphrase').value });
    if (r.ok) {
      csrf = (await r.json()).csrf;
      $('passphrase').value = '';
      $('login-error').textContent = '';
      await start();
    } else if (r.status === 401) {
      $('login-error').textContent = 'Wrong passphrase.';
    } else if (r.status === 429) {
      $('login-error').textContent = 'Too many attempts. Wait a little and try again.';
    } else {
      $('login-error').textContent = 'Login failed: ' + (await r.text());
    }
  } finally {
    button.disabled = false;
  }
});

$('logout').addEventListener('click', async () => {
  await post('/api/v1/logout', {});
  localStorage.removeItem(storeKey('unread'));
  localStorage.removeItem(storeKey('cursor'));
  location.reload();
});

// --- what this browser remembers -----------------------------------------------

// Kept apart per daemon: another one may serve on this origin later.
const instance = document.querySelector('meta[name=instance]').content;
function storeKey(name) { return 'safemeet.' + instance + '.' + name; }

function remember() {
  localStorage.setItem(storeKey('unread'), JSON.stringify(state.unread));
  if (state.cursor !== null) localStorage.setItem(storeKey('cursor'), String(state.cursor));
}

function recall() {
  try {
    state.unread = JSON.parse(localStorage.getItem(storeKey('unread')) || '{}') || {};
  } catch (_) {
    state.unread = {};
  }
  const c = localStorage.getItem(storeKey('cursor'));
  state.cursor = c === null ? null : Number(c);
}

// The end of the event log now: a first visit counts nothing as unread.
async function logEnd() {
  let end = 0;
  for (;;) {
    const page = await rpc('events', { since: end, limit: 10000 });
    if (page.length === 0) return end;
    end = page[page.length - 1].cursor;
  }
}

// --- the app ----------------------------------------------------------------

function nameOf(userId) {
  if (state.me && userId === state.me.user_id) return 'me';
  return state.names.get(userId) || userId.slice(0, 12) + '…';
}

function showView(name) {
  for (const b of document.querySelectorAll('header nav button')) {
    if (b.dataset.view === name) b.setAttribute('aria-current', 'page');
    else b.removeAttribute('aria-current');
  }
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== 'view-' + name;
  if (name === 'contacts') attempt('Contacts', loadContactsView);
  if (name === 'rooms') attempt('Rooms', loadRoomsView);
  if (name === 'settings') attempt('Settings', loadSettingsView);
}

for (const b of document.querySelectorAll('header nav button')) {
  b.addEventListener('click', () => showView(b.dataset.view));
}

async function start() {
  $('login').hidden = true;
  $('app').hidden = false;
  recall();
  state.me = await rpc('whoami');
  $('me').textContent = state.me.display_name || state.me.username;
  await loadConversations();
  if (state.cursor === null) {
    state.cursor = await logEnd();
    remember();
  }
  follow();
  showView('chats');
}

async function loadConversations() {
  const [contacts, rooms] = await Promise.all([rpc('contact.list'), rpc('room.list')]);
  state.names.clear();
  const list = [];
  for (const c of contacts) {
    const title = c.name || c.display_name || c.username;
    state.names.set(c.user_id, title);
    if (!c.deleted) list.push({ key: c.room_id, target: c.user_id, roomId: c.room_id, title });
  }
  for (const r of rooms) {
    list.push({ key: r.room_id, target: r.room_id, roomId: r.room_id, title: '# ' + r.name });
  }
  state.conversations = list;
  renderConversations();
}

function renderConversations() {
  const ul = $('conversations');
  ul.replaceChildren();
  if (state.conversations.length === 0) {
    const li = document.createElement('li');
    li.textContent = 'No conversations yet: add a contact with their invite.';
    ul.append(li);
  }
  for (const c of state.conversations) {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'open';
    b.dataset.room = c.roomId;
    const title = document.createElement('span');
    title.textContent = c.title;
    b.append(title);
    const n = state.unread[c.roomId] || 0;
    if (n > 0) {
      const badge = document.createElement('span');
      badge.className = 'unread';
      badge.textContent = String(n);
      badge.setAttribute('aria-label', n + ' unread');
      b.append(badge);
    }
    if (state.open && state.open.roomId === c.roomId) b.setAttribute('aria-current', 'true');
    b.addEventListener('click', () => attempt('Opening', () => openConversation(c)));
    li.append(b);
    ul.append(li);
  }
}

async function openConversation(c) {
  state.open = c;
  delete state.unread[c.roomId];
  remember();
  renderConversations();
  $('conversation').hidden = false;
  $('conversation-title').textContent = c.title;
  const messages = await rpc('messages', { target: c.target, limit: 200 });
  const ol = $('messages');
  ol.replaceChildren();
  for (const m of messages) showMessage(m);
  $('typing').textContent = '';
  markRead();
  $('send-text').focus();
}

// Calls: the daemon carries the audio (this page plays none yet); the bar
// starts a call with the contact (or the room's meeting), answers one
// ringing here, and shows how it goes.
function callText(c) {
  const secs = Math.floor(c.duration_ms / 1000);
  const latency = c.stats.mouth_to_ear_p95_ms == null ? '' : ', ' + c.stats.mouth_to_ear_p95_ms + ' ms';
  if (c.room_id) {
    return c.state === 'active'
      ? 'In the meeting with ' + c.participants.length + ' others, ' + secs + ' s' + latency
      : 'Meeting left';
  }
  switch (c.state) {
    case 'calling': return 'Calling ' + nameOf(c.with) + '…';
    case 'ringing': return nameOf(c.with) + ' is calling';
    case 'active': return 'In a call with ' + nameOf(c.with) + ', ' + secs + ' s' + latency;
    default: return 'Call ended' + (c.reason ? ' (' + c.reason + ')' : '');
  }
}

async function refreshCall() {
  const calls = await rpc('call.status', {});
  const c = calls[0];
  const on = c && c.state !== 'ended';
  $('call-start').hidden = on || !state.open;
  $('call-start').textContent = state.open && !state.open.target.startsWith('u_') ? 'Meet' : 'Call';
  $('call-accept').hidden = !(on && c.state === 'ringing');
  $('call-decline').hidden = !(on && c.state === 'ringing');
  $('call-hangup').hidden = !(on && c.state !== 'ringing');
  $('call-state').textContent = c ? callText(c) : '';
}

$('call-start').addEventListener('click', () => attempt('Calling', async () => {
  if (!state.open) return;
  if (state.open.target.startsWith('u_')) await rpc('call', { target: state.open.target });
  else await rpc('meet', { room: state.open.roomId });
  await refreshCall();
}));
$('call-accept').addEventListener('click', () => attempt('Answering', async () => {
  await rpc('call.accept', {});
  await refreshCall();
}));
$('call-decline').addEventListener('click', () => attempt('Declining', async () => {
  await rpc('call.decline', {});
  await refreshCall();
}));
$('call-hangup').addEventListener('click', () => attempt('Hanging up', async () => {
  await rpc('call.hangup', {});
  await refreshCall();
}));
setInterval(() => {
  if (document.hidden || $('app').hidden) return;
  attempt('Calls', refreshCall);
}, 1000);

function stateText(m) {
  switch (m.state) {
    case 'sent': return 'sent';
    case 'delivered': return 'delivered';
    case 'stored_at_relay':
      return m.stored_until
        ? 'stored at relay until ' + new Date(m.stored_until).toLocaleString()
        : 'stored at relay';
    default: return '';
  }
}

function showMessage(m) {
  const ol = $('messages');
  let li = ol.querySelector('li[data-event="' + CSS.escape(m.event_id) + '"]');
  if (!li) {
    li = document.createElement('li');
    li.dataset.event = m.event_id;
    ol.append(li);
  }
  li.className = state.me && m.sender === state.me.user_id ? 'mine' : '';
  const meta = document.createElement('span');
  meta.className = 'meta';
  const when = new Date(m.ts).toLocaleString();
  const status = stateText(m);
  meta.textContent = nameOf(m.sender) + ' · ' + when + (status ? ' · ' : '');
  const st = document.createElement('span');
  st.className = 'state';
  st.textContent = status;
  meta.append(st);
  if (m.read_by && m.read_by.length > 0) {
    const read = document.createElement('span');
    read.className = 'read';
    read.textContent = ' · read by ' + m.read_by.map(nameOf).join(', ');
    meta.append(read);
  }
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = m.redacted ? '(deleted)' : m.text + (m.edited ? ' (edited)' : '');
  li.replaceChildren(meta);
  if (m.file && !m.redacted) li.append(fileView(m));
  li.append(text);
  ol.scrollTop = ol.scrollHeight;
}

// --- files -----------------------------------------------------------------------

const INLINE = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];

function sizeText(n) {
  if (n < 1024) return n + ' bytes';
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
  return (n / 1024 / 1024).toFixed(1) + ' MiB';
}

// A file: an image shown once it is held whole and checked, else a link
// to save it; while it arrives, how far it is (from `progress` events).
function fileView(m) {
  const box = document.createElement('div');
  box.className = 'file';
  const mine = state.me && m.sender === state.me.user_id;
  const t = m.file.transfer;
  const whole = mine || (t && t.state === 'complete');
  const url = '/api/v1/files/' + encodeURIComponent(m.event_id);
  if (whole && INLINE.includes(m.file.media_type)) {
    const img = document.createElement('img');
    img.src = url;
    img.alt = m.file.name;
    img.className = 'inline-image';
    box.append(img);
  }
  if (whole) {
    const a = document.createElement('a');
    a.href = url;
    a.download = m.file.name;
    a.textContent = 'Save ' + m.file.name + ' (' + sizeText(m.file.size) + ')';
    box.append(a);
  } else {
    const p = document.createElement('span');
    if (t && t.state === 'failed') {
      p.className = 'error';
      p.textContent = m.file.name + ': refused (' + (t.reason || 'damaged') + ')';
    } else {
      const done = t ? t.done : 0;
      const chunks = t ? t.chunks : 1;
      p.textContent = m.file.name + ' (' + sizeText(m.file.size) + '): arriving, '
        + Math.floor((100 * done) / Math.max(chunks, 1)) + '%';
      watchFile(m);
    }
    box.append(p);
  }
  return box;
}

// Files still arriving, shown: each is redrawn as its `progress` events
// come (the event stream asks for them). The latest of each transfer is
// kept too, for a message drawn after its last event came.
const watched = new Map();
const latest = new Map();
function watchFile(m) {
  watched.set(m.event_id, m);
  const t = latest.get(m.event_id);
  if (t && t !== m.file.transfer && (!m.file.transfer || t.done >= m.file.transfer.done)) {
    setTimeout(() => progress(t), 0);
  }
}

function progress(t) {
  latest.delete(t.event_id);
  latest.set(t.event_id, t);
  if (latest.size > 256) latest.delete(latest.keys().next().value);
  const m = watched.get(t.event_id);
  if (!m) return;
  const still = $('messages').querySelector('li[data-event="' + CSS.escape(t.event_id) + '"]');
  if (!still || t.state === 'complete' || t.state === 'failed') watched.delete(t.event_id);
  if (!still) return;
  m.file.transfer = t;
  showMessage(m);
}

$('attach').addEventListener('change', () => {
  const file = $('attach').files[0];
  if (!state.open || !file) return;
  const query = new URLSearchParams({
    target: state.open.target,
    name: file.name,
    caption: $('send-text').value,
  });
  const xhr = new XMLHttpRequest();
  xhr.open('POST', '/api/v1/files?' + query.toString());
  xhr.setRequestHeader('x-csrf-token', csrf);
  xhr.setRequestHeader('content-type', file.type || 'application/octet-stream');
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) say('Sending ' + file.name + ': ' + Math.floor((100 * e.loaded) / e.total) + '%');
  };
  xhr.onload = () => {
    $('attach').value = '';
    if (xhr.status === 200) {
      $('send-text').value = '';
      say('');
    } else {
      let message = xhr.statusText;
      try { message = JSON.parse(xhr.responseText).error.message; } catch (_) { /* as is */ }
      say('Sending a file: ' + message, true);
    }
  };
  xhr.onerror = () => say('Sending a file: the daemon did not answer', true);
  xhr.send(file);
});

// --- typing and reading --------------------------------------------------------

let typingSent = 0;
$('send-text').addEventListener('input', () => {
  if (!state.open || Date.now() - typingSent < 3000) return;
  typingSent = Date.now();
  attempt('Typing', () => rpc('typing', { target: state.open.target, typing: true }));
});

let readAt = 0;
function markRead() {
  if (!state.open || document.hidden || Date.now() - readAt < 1000) return;
  readAt = Date.now();
  attempt('Reading', () => rpc('read', { target: state.open.target }));
}

setInterval(() => {
  if (!state.open || document.hidden) return;
  const open = state.open;
  attempt('Typing', async () => {
    const who = await rpc('typing.list', { target: open.target });
    if (state.open !== open) return;
    $('typing').textContent = who.length === 0
      ? ''
      : who.map(nameOf).join(', ') + (who.length === 1 ? ' is' : ' are') + ' typing…';
  });
}, 1500);

function setState(eventId, m) {
  const li = $('messages').querySelector('li[data-event="' + CSS.escape(eventId) + '"]');
  if (li) li.querySelector('.state').textContent = stateText(m);
}

function markDeleted(eventId) {
  const li = $('messages').querySelector('li[data-event="' + CSS.escape(eventId) + '"]');
  if (li) li.querySelector('.text').textContent = '(deleted)';
}

function removeMessage(eventId) {
  const li = $('messages').querySelector('li[data-event="' + CSS.escape(eventId) + '"]');
  if (li) li.remove();
}

// --- live events -------------------------------------------------------------

function follow() {
  if (state.source) state.source.close();
  const since = state.cursor || 0;
  const source = new EventSource('/api/v1/events?progress=1&since=' + since);
  state.source = source;
  source.addEventListener('progress', (e) => {
    try {
      progress(JSON.parse(e.data));
    } catch (_) {
      // A progress event that does not parse is skipped.
    }
  });
  source.onmessage = (e) => {
    let event;
    try {
      event = JSON.parse(e.data);
    } catch (_) {
      return;
    }
    state.cursor = event.cursor;
    handle(event);
    remember();
  };
  source.onerror = () => {
    // The browser reconnects by itself, sending Last-Event-ID; a stream the
    // server closed for good (the session ended) is checked here.
    fetch('/api/v1/check', { credentials: 'same-origin' })
      .then((r) => r.json())
      .then((c) => {
        if (!c.logged_in) showLogin('Your session ended. Log in again.');
      })
      .catch(() => say('The daemon is not answering; retrying…', true));
  };
}

function handle(event) {
  const open = state.open && state.open.roomId === event.room_id;
  switch (event.type) {
    case 'message':
      if (open) {
        showMessage(event.message);
        markRead();
      } else if (!state.me || event.message.sender !== state.me.user_id) {
        state.unread[event.room_id] = (state.unread[event.room_id] || 0) + 1;
        if (!state.conversations.some((c) => c.roomId === event.room_id)) {
          attempt('Conversations', loadConversations);
        } else {
          renderConversations();
        }
      }
      break;
    case 'edited':
      if (open) showMessage(event.message);
      break;
    case 'delivered':
      if (open) setState(event.event_id, { state: 'delivered' });
      break;
    case 'stored_at_relay':
      if (open) setState(event.event_id, { state: 'stored_at_relay', stored_until: event.stored_until });
      break;
    case 'redacted':
      if (open) markDeleted(event.event_id);
      break;
    case 'expired':
      if (open) removeMessage(event.event_id);
      break;
    case 'room':
      attempt('Rooms', loadConversations);
      break;
    default:
      break;
  }
}

// --- sending -------------------------------------------------------------------

$('send-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('send-text').value;
  if (!state.open || text.trim() === '') return;
  attempt('Sending', async () => {
    await rpc('send', { target: state.open.target, text });
    $('send-text').value = '';
    say('');
    if (typingSent > 0) {
      typingSent = 0;
      await rpc('typing', { target: state.open.target, typing: false });
    }
  });
});

$('send-text').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey) {
    event.preventDefault();
    $('send-form').requestSubmit();
  }
});

// --- contacts ------------------------------------------------------------------

function emptyItem(ul, text) {
  const li = document.createElement('li');
  li.textContent = text;
  ul.append(li);
}

function actionButton(label, what, fn) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.addEventListener('click', () => attempt(what, fn));
  return b;
}

async function loadRequests() {
  const requests = await rpc('request.list');
  const ul = $('requests');
  ul.replaceChildren();
  if (requests.length === 0) emptyItem(ul, 'None.');
  for (const r of requests) {
    const li = document.createElement('li');
    const who = document.createElement('span');
    who.textContent = r.display_name + ' (' + r.username + ') ';
    const accept = actionButton('Accept ' + r.username, 'Accepting', async () => {
      await rpc('request.accept', { target: r.user_id });
      say('Accepted.');
      await loadContactsView();
      await loadConversations();
    });
    const decline = actionButton('Decline ' + r.username, 'Declining', async () => {
      await rpc('request.decline', { target: r.user_id });
      await loadContactsView();
    });
    li.append(who, accept, decline);
    ul.append(li);
  }
}

async function loadContactsView() {
  await loadRequests();
  const invite = await rpc('invite');
  $('own-invite').value = invite.invite;
  $('invite-qr').src = '/api/v1/invite.svg';
  const contacts = await rpc('contact.list');
  const ul = $('contacts');
  ul.replaceChildren();
  for (const c of contacts) {
    const li = document.createElement('li');
    li.textContent = (c.name || c.display_name || c.username) + ' (' + c.username + ')' +
      (c.verified ? ' · verified' : '') + (c.deleted ? ' · account deleted' : '');
    ul.append(li);
  }
}

$('add-contact').addEventListener('submit', (event) => {
  event.preventDefault();
  attempt('Adding', async () => {
    const name = $('contact-name').value.trim();
    const params = { invite: $('invite-text').value.trim() };
    if (name) params.name = name;
    await rpc('contact.add', params);
    $('invite-text').value = '';
    $('contact-name').value = '';
    say('Contact added.');
    await loadContactsView();
    await loadConversations();
  });
});

// --- rooms ---------------------------------------------------------------------

async function loadInvitations() {
  const invitations = await rpc('room.invitations');
  const ul = $('invitations');
  ul.replaceChildren();
  if (invitations.length === 0) emptyItem(ul, 'None.');
  for (const inv of invitations) {
    const li = document.createElement('li');
    const what = document.createElement('span');
    what.textContent = inv.name + ', from ' + nameOf(inv.from) + ' ';
    const join = actionButton('Join ' + inv.name, 'Joining', async () => {
      await rpc('room.join', { room: inv.room_id });
      say('You joined ' + inv.name + '.');
      await loadRoomsView();
      await loadConversations();
    });
    const decline = actionButton('Decline ' + inv.name, 'Declining', async () => {
      await rpc('room.decline', { room: inv.room_id });
      await loadRoomsView();
    });
    li.append(what, join, decline);
    ul.append(li);
  }
}

async function loadRoomsView() {
  await loadInvitations();
  const [rooms, contacts] = await Promise.all([rpc('room.list'), rpc('contact.list')]);
  const ul = $('rooms');
  ul.replaceChildren();
  for (const r of rooms) {
    const li = document.createElement('li');
    const title = document.createElement('strong');
    title.textContent = r.name;
    const members = document.createElement('p');
    members.textContent = 'Members: ' + r.members.map(nameOf).join(', ');
    const form = document.createElement('form');
    const id = 'invite-' + r.room_id;
    const label = document.createElement('label');
    label.htmlFor = id;
    label.textContent = 'Invite a contact to ' + r.name;
    const select = document.createElement('select');
    select.id = id;
    for (const c of contacts) {
      if (r.members.includes(c.user_id) || c.deleted) continue;
      const o = document.createElement('option');
      o.value = c.user_id;
      o.textContent = c.name || c.display_name || c.username;
      select.append(o);
    }
    const invite = document.createElement('button');
    invite.type = 'submit';
    invite.textContent = 'Invite';
    invite.disabled = select.options.length === 0;
    form.append(label, select, invite);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      attempt('Inviting', async () => {
        await rpc('room.invite', { room: r.room_id, target: select.value });
        say('Invited.');
        await loadRoomsView();
      });
    });
    const leave = document.createElement('button');
    leave.type = 'button';
    leave.textContent = 'Leave ' + r.name;
    leave.addEventListener('click', () => attempt('Leaving', async () => {
      await rpc('room.leave', { room: r.room_id });
      say('You left ' + r.name + '.');
      await loadRoomsView();
      await loadConversations();
    }));
    li.append(title, members, form, leave);
    ul.append(li);
  }
}

$('create-room').addEventListener('submit', (event) => {
  event.preventDefault();
  attempt('Creating', async () => {
    await rpc('room.create', { name: $('room-name').value.trim() });
    $('room-name').value = '';
    say('Room created.');
    await loadRoomsView();
    await loadConversations();
  });
});

// --- profile, devices, settings -------------------------------------------------------

async function loadSettingsView() {
  const [profile, devices, settings] = await Promise.all([
    rpc('profile.show'), rpc('device.list'), rpc('settings.show'),
  ]);
  $('display-name').value = profile.display_name || '';
  const ul = $('devices');
  ul.replaceChildren();
  for (const d of devices) {
    const li = document.createElement('li');
    li.textContent = (d.name || d.device_id) + (d.this_device ? ' (this device)' : '') +
      (d.revoked_at ? ' · revoked' : '') + (d.verified ? '' : ' · not verified');
    ul.append(li);
  }
  $('retention').value = settings.retention_ms ? String(Math.round(settings.retention_ms / 86400000)) : '';
}

$('profile-form').addEventListener('submit', (event) => {
  event.preventDefault();
  attempt('Saving', async () => {
    await rpc('profile.set', { display_name: $('display-name').value.trim() });
    say('Profile saved.');
  });
});

$('retention-form').addEventListener('submit', (event) => {
  event.preventDefault();
  attempt('Saving', async () => {
    const days = $('retention').value.trim();
    await rpc('settings.set', { retention_ms: days ? Number(days) * 86400000 : null });
    say('Settings saved.');
  });
});

// --- start ------------------------------------------------------------------------

if (document.querySelector('meta[name=session]').content === 'in') {
  attempt('Starting', start);
} else {
  showLogin();
}
