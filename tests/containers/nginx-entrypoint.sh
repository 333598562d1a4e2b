#!/bin/bash
# The official nginx image's entry point, reduced to what PhotoScore's proxy uses: with `nginx`
# as the command, source /docker-entrypoint.d/*.envsh and run *.sh in order (the image's own
# 20-envsubst-on-templates.sh is the loop below), then exec the command.
set -euo pipefail
if [[ "${1:-}" == nginx ]]; then
  for script in /docker-entrypoint.d/*; do
    [[ -f "$script" ]] || continue
    case "$script" in
      *.envsh)
        if [[ -x "$script" ]]; then
          echo "stand-in nginx: sourcing $script"
          # shellcheck source=/dev/null
          . "$script"
        fi
        ;;
      *.sh) if [[ -x "$script" ]]; then echo "stand-in nginx: running $script"; "$script"; fi ;;
    esac
  done
  # 20-envsubst-on-templates.sh: substitute the variables that are defined, nothing else.
  mapfile -t names < <(compgen -e)
  # shellcheck disable=SC2016 # literal ${NAME} for envsh's list of variables
  defined="$(printf '${%s} ' "${names[@]}")"
  for template in /etc/nginx/templates/*.template; do
    [[ -f "$template" ]] || continue
    out="/etc/nginx/conf.d/$(basename "$template" .template)"
    envsubst "$defined" <"$template" >"$out"
    echo "stand-in nginx: rendered $template to $out"
  done
fi
exec "$@"
