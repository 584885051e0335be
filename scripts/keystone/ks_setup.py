#!/usr/bin/env python3
"""Create the test identities in a running Keystone through its v3 API.

Used by scripts/keystone-dev start; safe to re-run against the same Keystone (everything is
"ensure": found by name, created if missing, passwords reset to the known
values, role grants are idempotent PUTs). Standard library only.

  python3 ks_setup.py --url http://127.0.0.1:5000 --admin-password PW \
      --credentials DATA/credentials.json [--users-env DATA/users.env] \
      [--glance-url http://127.0.0.1:9292]

Creates (domain "default" exists after bootstrap):
  projects projA, projB, service
  alice  member+reader on projA      bob  member+reader on projB
  depot  admin (+service if that role exists) on project service
  an application credential "depot-appcred" for depot (unless --no-appcred)
  with --glance-url: service type "image" (name glance) and public/internal/
  admin endpoints in RegionOne pointing at GLANCE_URL.
Writes DATA/credentials.json (layout: see scripts/keystone-dev help) and,
with --users-env, a shell-sourceable env file with the same URLs, names, ids
and passwords.
"""
import argparse
import json
import os
import shlex
import sys
import urllib.error
import urllib.request

DOMAIN = 'default'
DOMAIN_NAME = 'Default'  # name of the domain with id 'default' (bootstrap)


class Keystone(object):
    def __init__(self, url):
        self.url = url.rstrip('/')
        self.token = None

    def call(self, method, path, body=None, token=None, ok=(200, 201, 204),
             headers=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header('Content-Type', 'application/json')
        tok = self.token if token is None else token
        if tok:
            req.add_header('X-Auth-Token', tok)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                raw = r.read()
                status, hdrs = r.status, r.headers
        except urllib.error.HTTPError as e:
            raw, status, hdrs = e.read(), e.code, e.headers
        if status not in ok:
            raise SystemExit('%s %s -> HTTP %s: %s' % (
                method, path, status, raw[:500].decode(errors='replace')))
        return status, hdrs, (json.loads(raw) if raw else None)

    def password_token(self, user, password, project=None, system=False):
        scope = ({'system': {'all': True}} if system else
                 {'project': {'name': project, 'domain': {'id': DOMAIN}}})
        body = {'auth': {
            'identity': {'methods': ['password'], 'password': {'user': {
                'name': user, 'domain': {'id': DOMAIN},
                'password': password}}},
            'scope': scope}}
        _, h, b = self.call('POST', '/v3/auth/tokens?nocatalog', body,
                            token='', ok=(201,))
        return h['X-Subject-Token'], b['token']

    def find(self, collection, key, name, **filters):
        q = '&'.join(['name=%s' % urllib.request.quote(name)] +
                     ['%s=%s' % kv for kv in filters.items()])
        _, _, b = self.call('GET', '/v3/%s?%s' % (collection, q))
        items = [i for i in b[collection] if i['name'] == name]
        return items[0] if items else None

    def ensure(self, collection, key, name, extra):
        found = self.find(collection, key, name,
                          **({'domain_id': DOMAIN}
                             if collection in ('projects', 'users') else {}))
        if found:
            return found, False
        body = dict(extra, name=name)
        _, _, b = self.call('POST', '/v3/%s' % collection, {key: body})
        return b[key], True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--url', required=True, help='http://127.0.0.1:PORT')
    ap.add_argument('--admin-user', default='admin')
    ap.add_argument('--admin-password', required=True)
    ap.add_argument('--admin-project', default='admin')
    ap.add_argument('--region', default='RegionOne')
    ap.add_argument('--alice-password', default='alice-secret')
    ap.add_argument('--bob-password', default='bob-secret')
    ap.add_argument('--depot-password', default='depot-secret')
    ap.add_argument('--appcred-secret', default='depot-appcred-secret')
    ap.add_argument('--no-appcred', action='store_true')
    ap.add_argument('--glance-url', default='')
    ap.add_argument('--users-env', default='')
    ap.add_argument('--credentials', required=True, help='JSON file to write')
    a = ap.parse_args()

    ks = Keystone(a.url)
    # System-scoped admin token: allowed to manage projects, users, roles,
    # services and endpoints under keystone's default (scope-enforcing) policy.
    ks.token, _ = ks.password_token(a.admin_user, a.admin_password, system=True)

    roles = {r['name']: r['id'] for r in ks.call('GET', '/v3/roles')[2]['roles']}
    for need in ('admin', 'member', 'reader'):
        if need not in roles:
            raise SystemExit('role %s missing (bootstrap not run?)' % need)

    projects = {}
    for p in ('projA', 'projB', 'service'):
        proj, created = ks.ensure('projects', 'project', p, {
            'domain_id': DOMAIN, 'enabled': True,
            'description': 'test project (ks_setup.py)'})
        projects[p] = proj['id']
    admin_project = ks.find('projects', 'project', a.admin_project,
                            domain_id=DOMAIN)

    spec = [
        ('alice', a.alice_password, 'projA', ['member', 'reader']),
        ('bob', a.bob_password, 'projB', ['member', 'reader']),
        ('depot', a.depot_password, 'service',
         ['admin', 'member', 'reader'] + (['service'] if 'service' in roles else [])),
    ]
    users = {}
    for name, pw, proj, rnames in spec:
        user, created = ks.ensure('users', 'user', name, {
            'domain_id': DOMAIN, 'enabled': True, 'password': pw,
            'default_project_id': projects[proj]})
        if not created:  # reset to the known password (idempotent re-run)
            ks.call('PATCH', '/v3/users/%s' % user['id'],
                    {'user': {'password': pw, 'enabled': True}})
        for r in rnames:
            ks.call('PUT', '/v3/projects/%s/users/%s/roles/%s' % (
                projects[proj], user['id'], roles[r]))
        users[name] = user['id']

    admin_user = ks.find('users', 'user', a.admin_user, domain_id=DOMAIN)

    # Application credential for depot (created with depot's own token).
    appcred = None
    if not a.no_appcred:
        dtok, _ = ks.password_token('depot', a.depot_password, 'service')
        _, _, b = ks.call('GET', '/v3/users/%s/application_credentials?name=depot-appcred'
                          % users['depot'], token=dtok)
        for c in b['application_credentials']:
            ks.call('DELETE', '/v3/users/%s/application_credentials/%s'
                    % (users['depot'], c['id']), token=dtok)
        _, _, b = ks.call('POST', '/v3/users/%s/application_credentials' % users['depot'], {
            'application_credential': {
                'name': 'depot-appcred', 'secret': a.appcred_secret,
                'description': 'Depot service credential (ks_setup.py)'}},
            token=dtok)
        appcred = b['application_credential']

    # Optional: image service + endpoints in the catalog.
    image_service_id = ''
    if a.glance_url:
        svcs = [s for s in ks.call('GET', '/v3/services?type=image')[2]['services']]
        svc = svcs[0] if svcs else ks.call('POST', '/v3/services', {'service': {
            'type': 'image', 'name': 'glance', 'enabled': True,
            'description': 'OpenStack Image (loopback test)'}})[2]['service']
        image_service_id = svc['id']
        eps = ks.call('GET', '/v3/endpoints?service_id=%s' % svc['id'])[2]['endpoints']
        for iface in ('public', 'internal', 'admin'):
            mine = [e for e in eps if e['interface'] == iface]
            if mine:
                e = mine[0]
                if e['url'] != a.glance_url or e.get('region_id') != a.region:
                    ks.call('PATCH', '/v3/endpoints/%s' % e['id'], {'endpoint': {
                        'url': a.glance_url, 'region_id': a.region, 'enabled': True}})
                for extra in mine[1:]:
                    ks.call('DELETE', '/v3/endpoints/%s' % extra['id'])
            else:
                ks.call('POST', '/v3/endpoints', {'endpoint': {
                    'service_id': svc['id'], 'interface': iface,
                    'url': a.glance_url, 'region_id': a.region, 'enabled': True}})

    env = [
        ('OS_AUTH_URL', a.url.rstrip('/') + '/v3'),
        ('OS_IDENTITY_API_VERSION', '3'),
        ('OS_REGION_NAME', a.region),
        ('OS_USER_DOMAIN_ID', DOMAIN),
        ('OS_PROJECT_DOMAIN_ID', DOMAIN),
        ('KEYSTONE_URL', a.url.rstrip('/')),
        ('KS_ADMIN_USER', a.admin_user),
        ('KS_ADMIN_USER_ID', admin_user['id']),
        ('KS_ADMIN_PASSWORD', a.admin_password),
        ('KS_ADMIN_PROJECT', a.admin_project),
        ('KS_ADMIN_PROJECT_ID', admin_project['id']),
        ('KS_ALICE_USER', 'alice'), ('KS_ALICE_USER_ID', users['alice']),
        ('KS_ALICE_PASSWORD', a.alice_password),
        ('KS_ALICE_PROJECT', 'projA'), ('KS_ALICE_PROJECT_ID', projects['projA']),
        ('KS_BOB_USER', 'bob'), ('KS_BOB_USER_ID', users['bob']),
        ('KS_BOB_PASSWORD', a.bob_password),
        ('KS_BOB_PROJECT', 'projB'), ('KS_BOB_PROJECT_ID', projects['projB']),
        ('KS_DEPOT_USER', 'depot'), ('KS_DEPOT_USER_ID', users['depot']),
        ('KS_DEPOT_PASSWORD', a.depot_password),
        ('KS_DEPOT_PROJECT', 'service'), ('KS_DEPOT_PROJECT_ID', projects['service']),
        ('KS_DEPOT_APPCRED_ID', appcred['id'] if appcred else ''),
        ('KS_DEPOT_APPCRED_SECRET', a.appcred_secret if appcred else ''),
        ('KS_IMAGE_URL', a.glance_url),
        ('KS_IMAGE_SERVICE_ID', image_service_id),
    ]
    base = a.url.rstrip('/')

    def user_entry(name, uid, pw, proj, pid):
        return {'username': name, 'password': pw, 'user_id': uid,
                'project_name': proj, 'project_id': pid,
                'user_domain_name': DOMAIN_NAME, 'user_domain_id': DOMAIN,
                'project_domain_name': DOMAIN_NAME, 'project_domain_id': DOMAIN}

    creds = {
        'auth_url': base + '/v3',
        'keystone_url': base,
        'glance_url': a.glance_url,
        'region': a.region,
        'users': {
            'admin': user_entry(a.admin_user, admin_user['id'], a.admin_password,
                                a.admin_project, admin_project['id']),
            'alice': user_entry('alice', users['alice'], a.alice_password,
                                'projA', projects['projA']),
            'bob': user_entry('bob', users['bob'], a.bob_password,
                              'projB', projects['projB']),
            'depot': user_entry('depot', users['depot'], a.depot_password,
                                'service', projects['service']),
        },
        'depot_application_credential': ({
            'id': appcred['id'], 'secret': a.appcred_secret,
            'name': appcred['name'], 'user_id': users['depot'],
            'project_id': projects['service'],
        } if appcred else None),
    }
    write_private(a.credentials, json.dumps(creds, indent=2, sort_keys=True) + '\n')

    if not a.users_env:
        return report(a, projects, appcred)
    tmp = a.users_env + '.tmp'
    with open(tmp, 'w') as f:
        f.write('# written by ks_setup.py; source it:  . %s\n'
                % os.path.basename(a.users_env))
        for k, v in env:
            f.write('%s=%s\n' % (k, shlex.quote(v)))
        f.write('export %s\n' % ' '.join(k for k, _ in env))
    os.chmod(tmp, 0o600)
    os.replace(tmp, a.users_env)
    report(a, projects, appcred)


def write_private(path, text):
    tmp = path + '.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def report(a, projects, appcred):
    print('keystone setup done: projects %s, users alice bob depot, appcred %s, image endpoint %s'
          % (' '.join(sorted(projects)), 'yes' if appcred else 'no',
             a.glance_url or 'not registered'), file=sys.stderr)


if __name__ == '__main__':
    main()
