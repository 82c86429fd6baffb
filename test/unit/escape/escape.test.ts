import { execFileSync } from 'node:child_process';
import t from 'tap';
import {
  IPTABLES_COMMENT_MAX,
  NFT_COMMENT_MAX,
  NFT_NAME_MAX,
  nftIdentifierPart,
  iptablesComment,
  nftString,
  terminalText,
} from '../../../src/escape/index.js';

const hostile = [
  'q\n-I INPUT 1 -s 6.6.6.6 -j ACCEPT\n#',
  'a"; flush ruleset; "',
  'x } ; add rule ip filter input accept ; {',
  "$var @set \\ ' ` \u202e \u0000 \u00ff 日本",
  'x'.repeat(1000),
];

t.test('nftString: quoted, safe, bounded, distinct', async (t) => {
  for (const h of hostile) {
    const s = nftString(h);
    t.match(s, /^"[A-Za-z0-9 ._:/\-+=,()<>[\]~]*"$/, JSON.stringify(h));
    t.ok(Buffer.byteLength(s) - 2 <= NFT_COMMENT_MAX);
  }
  t.equal(nftString('default/web:http'), '"default/web:http"', 'plain text unchanged');
  t.not(nftString('a\nb'), nftString('a;b'), 'different originals stay distinct');
  t.not(nftString('x'.repeat(200) + 'a'), nftString('x'.repeat(200) + 'b'));
});

t.test('iptablesComment: one token, safe, bounded', async (t) => {
  for (const h of hostile) {
    const s = iptablesComment(h);
    t.notMatch(s, /[\n\r\\]/);
    t.ok(!s.slice(1, -1).includes('"'), 'no quote inside');
    t.ok(Buffer.byteLength(s.replace(/^"|"$/g, '')) <= IPTABLES_COMMENT_MAX);
  }
  t.equal(iptablesComment('default/web:http'), 'default/web:http');
  t.equal(iptablesComment('default/web cluster IP'), '"default/web cluster IP"');
});

t.test('terminalText: no control characters survive', async (t) => {
  t.equal(terminalText('a\nb\x1b[2J\u202e\\'), 'a\\nb\\x1b[2J\\u202e\\\\');
  t.equal(terminalText('web-1'), 'web-1');
  // eslint-disable-next-line no-control-regex
  for (const h of hostile) t.notMatch(terminalText(h), /[\u0000-\u001f\u007f-\u009f\u202e]/);
});

t.test(
  'iptables-restore --test accepts every escaped comment',
  { skip: process.getuid?.() !== 0 && 'needs root' },
  async (t) => {
    const rules = hostile.map(
      (h) => `-A WEFT-ESCAPE-TEST -m comment --comment ${iptablesComment(h)} -j RETURN`,
    );
    const payload = ['*filter', ':WEFT-ESCAPE-TEST - [0:0]', ...rules, 'COMMIT', ''].join('\n');
    t.doesNotThrow(() =>
      execFileSync('iptables-restore', ['--test'], { input: payload, stdio: ['pipe', 'ignore', 'pipe'] }),
    );
  },
);

t.test(
  'nft -c accepts every escaped comment',
  { skip: process.getuid?.() !== 0 && 'needs root' },
  async (t) => {
    const lines = hostile.map((h) => `add rule inet weft_escape_test c accept comment ${nftString(h)}`);
    const script = [
      'add table inet weft_escape_test',
      'add chain inet weft_escape_test c',
      ...lines,
      '',
    ].join('\n');
    t.doesNotThrow(() =>
      execFileSync('nft', ['-c', '-f', '-'], { input: script, stdio: ['pipe', 'ignore', 'pipe'] }),
    );
  },
);

t.test('nftIdentifierPart: identifier characters only, bounded, distinct', async (t) => {
  t.equal(nftIdentifierPart('default/web/tcp/http'), 'default/web/tcp/http', 'plain text unchanged');
  for (const h of hostile) {
    const s = nftIdentifierPart(h, 100);
    t.match(s, /^[A-Za-z0-9/_.-]*$/, JSON.stringify(h));
    t.ok(s.length <= 100);
  }
  t.not(nftIdentifierPart('a b'), nftIdentifierPart('a;b'));
  t.equal(nftIdentifierPart('x'.repeat(300)).length, NFT_NAME_MAX);
});
