/** Label selectors: Service equality selectors, and kubectl's `-l` syntax with clear errors. */
import t from 'tap';
import { ErrorCodes, isWeftError } from '../../../src/errors/index.js';
import {
  formatLabelSelector,
  labelSelectorMatches,
  parseLabelSelector,
  selectorMatches,
} from '../../../src/k8s/index.js';

t.test('selectorMatches: every pair must be present', async (t) => {
  t.ok(selectorMatches({ app: 'web' }, { app: 'web', tier: 'fe' }));
  t.notOk(selectorMatches({ app: 'web', tier: 'be' }, { app: 'web', tier: 'fe' }));
  t.notOk(selectorMatches({ app: '' }, {}), 'an empty value needs the key');
  t.ok(selectorMatches({ app: '' }, { app: '' }));
  t.notOk(selectorMatches({ toString: 'x' }, {}), 'no inherited properties');
  t.ok(selectorMatches({}, { a: 'b' }), 'the empty map matches (callers skip selector-less services)');
});

t.test('parseLabelSelector: kubectl forms', async (t) => {
  const cases: [string, string][] = [
    ['app=web', 'app=web'],
    ['app==web', 'app=web'],
    [' app = web , tier!=db ', 'app=web,tier!=db'],
    ['tier in (a, b),!canary,x', 'tier in (a,b),!canary,x'],
    ['tier notin (a)', 'tier notin (a)'],
    ['example.com/role=x_y.z', 'example.com/role=x_y.z'],
    ['a=', 'a='],
    ['', ''],
  ];
  for (const [text, back] of cases) t.equal(formatLabelSelector(parseLabelSelector(text)), back, text);
});

t.test('labelSelectorMatches: kube semantics', async (t) => {
  const m = (sel: string, labels: Record<string, string>) =>
    labelSelectorMatches(parseLabelSelector(sel), labels);
  t.ok(m('', {}), 'the empty selector matches everything');
  t.ok(m('app=web', { app: 'web' }));
  t.notOk(m('app=web', {}));
  t.ok(m('app!=web', {}), '!= holds for an absent key');
  t.notOk(m('app!=web', { app: 'web' }));
  t.ok(m('tier in (a,b)', { tier: 'b' }));
  t.notOk(m('tier in (a,b)', {}));
  t.ok(m('tier notin (a,b)', {}));
  t.notOk(m('tier notin (a,b)', { tier: 'a' }));
  t.ok(m('x', { x: '' }));
  t.notOk(m('!x', { x: '' }));
  t.ok(m('!x,app=web', { app: 'web' }));
  t.ok(m('a=', { a: '' }));
  t.notOk(m('toString', {}), 'no inherited properties');
});

t.test('parseLabelSelector: clear errors', async (t) => {
  const bad: [string, RegExp][] = [
    ['a in ()', /must not be empty/],
    ['a b', /expected "=".*found "b" at position 3/],
    ['A/b=c', /key "A\/b" prefix must be a DNS-1123 subdomain/],
    ['a,', /ends with ","/],
    ['a=b=c', /expected "," or the end, found "=" at position 4/],
    ['a=-x', /value "-x" of key "a" must be a label value/],
    ['=b', /expected a label key, found "=" at position 1/],
    ['a in (x', /expected "," or "\)", found the end/],
    ['a in x', /expected "\(" after in/],
    ['a\nb=c', /expected "="/],
    [`a=${'v'.repeat(64)}`, /no more than 63 characters/],
    ['x'.repeat(20_000), /longer than/],
  ];
  for (const [text, re] of bad) {
    try {
      parseLabelSelector(text);
      t.fail(`accepted ${JSON.stringify(text)}`);
    } catch (err) {
      t.ok(isWeftError(err, ErrorCodes.INVALID_ARGUMENT), text);
      t.match((err as Error).message, re, text.slice(0, 40));
      t.notMatch((err as Error).message, /\n/, 'one line');
    }
  }
});
