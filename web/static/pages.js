// The panel's pages: Signals (the tiles), Logs, Device and Settings,
// chosen by the URL's fragment (#logs, #device, #settings) so that each
// can be bookmarked or added to a phone's home screen. A page's tab shows
// once the bridge answers its endpoint for this session: a read token
// sees logs and the device page, only the control token sees settings.

import {getJSON} from './dom.js';
import {DevicePage} from './device.js';
import {LogsPage} from './logs.js';
import {SettingsPage} from './settings.js';

const ENDPOINTS = {logs: 'api/logs', device: 'api/device', settings: 'api/config'};

export class Pages {
  constructor() {
    this.pages = {logs: new LogsPage(), device: new DevicePage(), settings: new SettingsPage()};
    this.available = {signals: true, logs: false, device: false, settings: false};
    this.current = 'signals';
    window.addEventListener('hashchange', () => this.route());
    this.route();
  }

  // probe asks which pages this session may see; called on every hello.
  async probe(readonly) {
    await Promise.all(Object.entries(ENDPOINTS).map(async ([page, url]) => {
      if (page === 'settings' && readonly) {
        this.available[page] = false;
        return;
      }
      const {status} = await getJSON(url, {method: page === 'logs' ? 'HEAD' : 'GET'});
      this.available[page] = status === 200;
    }));
    for (const link of document.querySelectorAll('#pages a[data-page]')) {
      link.hidden = !this.available[link.dataset.page];
    }
    this.route();
  }

  pageFromHash() {
    const name = location.hash.replace(/^#/, '');
    return Object.hasOwn(this.pages, name) ? name : 'signals';
  }

  route() {
    let page = this.pageFromHash();
    if (page !== 'signals' && !this.available[page] && page !== 'settings') page = 'signals';
    this.current = page;
    document.getElementById('panel').dataset.page = page;
    for (const link of document.querySelectorAll('#pages a[data-page]')) {
      if (link.dataset.page === page) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    for (const [name, obj] of Object.entries(this.pages)) {
      const section = document.getElementById(`page-${name}`);
      const shown = name === page;
      section.hidden = !shown;
      if (shown) obj.show();
      else obj.hide();
    }
  }
}
