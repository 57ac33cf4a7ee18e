# azd prepackage hook of the api service (Windows, or PowerShell 7 anywhere): the same as prepackage.sh.
$ErrorActionPreference = 'Stop'
$root = Resolve-Path (Join-Path $PSScriptRoot '..' '..')
$python = Get-Command python3 -ErrorAction SilentlyContinue
if (-not $python) { $python = Get-Command python -ErrorAction SilentlyContinue }
if (-not $python) {
    Write-Warning 'prepackage: no python on PATH: bytecode not compiled (cold starts compile it from source).'
    exit 0
}
& $python.Source (Join-Path $root 'infra' 'hooks' 'compile_bytecode.py') $root
exit $LASTEXITCODE
