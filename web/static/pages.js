// The panel's pages: Signals (the tiles), Logs, Device and Settings,
// chosen by the URL's fragment (#logs, #device, #settings) so that each
// can be bookmarked or added to a phone's home screen. A page's tab shows
// when the hello lists it: a read token sees logs and the device page,
// only the control token sees settings.

import {DevicePage} from './device.js';
import {LogsPage} from './logs.js';
import {SettingsPage} from './settings.js';

export class Pages {
  constructor() {
    this.pages = {logs: new LogsPage(), device: new DevicePage(), settings: new SettingsPage()};
    this.available = {signals: true, logs: false, device: false, settings: false};
    this.current = 'signals';
    this.listed = new Set();
    this.readonly = false;
    document.getElementById('pages').hidden = true;
    window.addEventListener('hashchange', () => this.route());
    this.route();
  }

  // offer shows the tabs of the pages the hello lists; settings only to
  // the control token. Called on every hello.
  offer(pages, readonly) {
    const listed = new Set(Array.isArray(pages) ? pages : []);
    this.listed = listed;
    this.readonly = readonly;
    for (const page of Object.keys(this.pages)) {
      this.available[page] = listed.has(page) && !(page === 'settings' && readonly);
    }
    for (const link of document.querySelectorAll('#pages a[data-page]')) {
      link.hidden = !this.available[link.dataset.page];
    }
    // Only Signals: no tab bar at all.
    document.getElementById('pages').hidden = !['logs', 'device', 'settings'].some((p) => this.available[p]);
    this.route();
  }

  pageFromHash() {
    const name = location.hash.replace(/^#/, '');
    return Object.hasOwn(this.pages, name) ? name : 'signals';
  }

  route() {
    let page = this.pageFromHash();
    // A read token that follows a link to #settings is told why it sees none.
    const denied = page === 'settings' && this.listed.has('settings') && this.readonly;
    if (page !== 'signals' && !this.available[page] && !denied) page = 'signals';
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
      if (shown && denied) obj.deny('Settings need the control token.');
      else if (shown) obj.show();
      else obj.hide();
    }
  }
}
