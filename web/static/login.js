// The sign-in form the panel and the fleet gateway's page share. It fills
// the page's empty #login-panel, posts the token to api/login (relative, so
// it works under a proxy's prefix; the answer sets the session cookie) and
// leaves what happens around it (sockets, placeholders) to the page.

// loginForm builds the form. what names the server in its messages
// ("bridge", "gateway"); failed(error) runs when a sign-in is refused,
// signedIn() when it succeeded. It returns show(error), hide() and
// submit(token), which signs in as the form's button does.
export function loginForm(what, {failed, signedIn}) {
  const panel = document.getElementById('login-panel');
  const make = (tag, props, ...children) => {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  };
  const input = make('input', {id: 'token', name: 'token', type: 'password',
    autocomplete: 'current-password', spellcheck: false, required: true});
  const button = make('button', {type: 'submit'}, 'Sign in');
  const error = make('p', {id: 'login-error', className: 'error', hidden: true});
  error.setAttribute('role', 'alert');
  const form = make('form', {id: 'login', method: 'post', action: 'api/login'},
    make('label', {htmlFor: 'token'}, 'Token'), input, button, error);
  panel.replaceChildren(make('h2', {id: 'login-title'}, 'Sign in'),
    make('p', {}, `This ${what} needs its access token.`), form);

  const setError = (text) => {
    error.textContent = text;
    error.hidden = !text;
  };
  const submit = async (token) => {
    button.disabled = true;
    const err = await login(what, token);
    button.disabled = false;
    if (err) {
      failed(err);
      return;
    }
    input.value = '';
    panel.hidden = true;
    setError('');
    signedIn();
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    setError(''); // a new attempt: the last one's error is old news
    if (input.value) submit(input.value);
  });
  return {
    show(text) {
      const wasHidden = panel.hidden;
      panel.hidden = false;
      setError(text);
      if (wasHidden) input.focus();
    },
    hide() {
      panel.hidden = true;
      setError('');
    },
    submit,
  };
}

// login posts the token. It resolves to an error message, or '' on success.
export async function login(what, token) {
  let res;
  try {
    res = await fetch('api/login', {
      method: 'POST',
      credentials: 'same-origin',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({token}),
    });
  } catch (err) {
    return `The ${what} cannot be reached.`;
  }
  if (res.ok) return '';
  let detail = '';
  try {
    const body = await res.json();
    if (typeof body.error === 'string') detail = body.error;
  } catch (err) {
    // not JSON
  }
  if (res.status === 401) return detail || 'Wrong token.';
  if (res.status === 429) return detail || 'Too many attempts; wait a moment.';
  return detail || `Login failed (HTTP ${res.status}).`;
}
